"""Write-audit-publish transforms: dbt on a Nessie branch, merged into main when it passes."""
