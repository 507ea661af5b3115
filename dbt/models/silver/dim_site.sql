with sites as (
    select * from {{ source('registry', 'sites') }}
),

final as (
    select
        site,
        tenant,
        lat,
        lon,
        created_at
    from sites
)

select * from final
