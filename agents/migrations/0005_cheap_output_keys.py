"""A stage's cheap output, kept in the ticket's context when it handed the stage over to Claude, is
named `<stage>_cheap` (was `<stage>_cpu`): the keys of every ticket that has one are renamed, rows
and values otherwise untouched."""

from django.db import migrations

RENAME = r"""
UPDATE tickets_ticket
SET context = (
    SELECT jsonb_object_agg(
        CASE WHEN key LIKE '%\_{old}' THEN left(key, -length('{old}')) || '{new}' ELSE key END, value
    )
    FROM jsonb_each(context)
)
WHERE jsonb_typeof(context) = 'object'
  AND EXISTS (SELECT 1 FROM jsonb_object_keys(context) AS k WHERE k LIKE '%\_{old}')
"""


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0004_stage_is_not_a_choice"),
        ("tickets", "0004_status_is_not_a_choice"),
    ]

    operations = [
        migrations.RunSQL(
            RENAME.format(old="cpu", new="cheap"),
            reverse_sql=RENAME.format(old="cheap", new="cpu"),
        ),
    ]
