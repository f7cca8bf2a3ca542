{#- The RFM score formulas of SPEC §6, used by int_customers_scored. -#}

{#-
    f_score of an order count: 1 + the number of bins the count exceeds. With [1, 2, 3, 5]: 1 order = 1,
    2 = 2, 3 = 3, 4-5 = 4, 6 or more = 5.
-#}
{% macro rfm_f_score(frequency) -%}
    (1
    {%- for bin in rfm_frequency_bins() %}
        + case when {{ frequency }} > {{ bin }} then 1 else 0 end
    {%- endfor %})
{%- endmacro %}


{#-
    R and M scores (SPEC §6): 1 + floor(5 × worse ÷ scored), computed exactly with integers, as 1 + the number
    of k in 1..4 with 5 × worse ≥ k × scored (no floating-point division, so no rounding at the boundaries).
    worse < scored always, so the score is 1 to 5.
-#}
{% macro rfm_quintile_score(worse, scored) -%}
    (1
    {%- for k in range(1, 5) %}
        + case when 5 * {{ worse }} >= {{ k }} * {{ scored }} then 1 else 0 end
    {%- endfor %})
{%- endmacro %}
