"""The native stack: each server as a plain local process, one module per service."""
