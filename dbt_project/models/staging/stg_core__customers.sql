{#-
    PII stays in core: no e-mail, phone, names, document hash or source customer ids (a BonifiQ customer id is
    often the e-mail itself). What is left says whether the customer can be reached, not how.
-#}

with

customers as (

    select * from {{ source('core', 'customers') }}

),

final as (

    select

        ---------- ids
        customer_id,

        ---------- lists
        sources,

        ---------- booleans
        email is not null as has_email,
        phone is not null as has_phone,
        document_hash is not null as has_document,

        ---------- timestamps
        cast(first_seen_at as timestamp) as first_seen_at

    from customers

)

select * from final
