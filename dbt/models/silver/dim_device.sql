with devices as (
    select * from {{ source('registry', 'devices') }}
),

final as (
    select
        device_id,
        tenant,
        site,
        created_at,
        revoked_at,
        revoked_at is null as is_active
    from devices
)

select * from final
