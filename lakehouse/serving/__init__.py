"""The PostgreSQL serving layer: marts for dashboards, with row-level security per tenant."""
