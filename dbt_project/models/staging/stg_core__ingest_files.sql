with

ingest_files as (

    select * from {{ source('core', 'ingest_files') }}

),

final as (

    select

        ---------- ids
        path as source_file,
        sha256,

        ---------- strings
        source,
        error as read_error,

        ---------- numerics
        cast(size_bytes as bigint) as size_bytes,
        cast(records_read as bigint) as records_read,
        cast(records_accepted as bigint) as records_accepted,
        cast(records_quarantined as bigint) as records_quarantined,

        ---------- timestamps
        cast(first_ingested_at as timestamp) as first_ingested_at,
        cast(last_ingested_at as timestamp) as last_ingested_at

    from ingest_files

)

select * from final
