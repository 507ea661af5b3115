with tenants as (
    select * from {{ source('registry', 'tenants') }}
),

sites as (
    select tenant, count(*) as sites from {{ source('registry', 'sites') }} group by tenant
),

devices as (
    select
        tenant,
        count(*) as devices,
        count_if(revoked_at is null) as active_devices
    from {{ source('registry', 'devices') }}
    group by tenant
),

final as (
    select
        t.tenant,
        t.created_at,
        coalesce(s.sites, 0) as sites,
        coalesce(d.devices, 0) as devices,
        coalesce(d.active_devices, 0) as active_devices
    from tenants as t
    left join sites as s on s.tenant = t.tenant
    left join devices as d on d.tenant = t.tenant
)

select * from final
