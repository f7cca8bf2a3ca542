{#-
    The raw record text is left in core.quarantine: it is verbatim input and may carry e-mails and phones.
-#}

with

quarantine as (

    select * from {{ source('core', 'quarantine') }}

),

final as (

    select

        ---------- ids
        source_file,
        record_locator,
        run_id,

        ---------- strings
        source,
        reason_code,
        reason,

        ---------- timestamps
        cast(ingested_at as timestamp) as ingested_at

    from quarantine

)

select * from final
