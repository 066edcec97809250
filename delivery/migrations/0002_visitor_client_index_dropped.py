"""The visitor's client index goes: the unique (client, visitor_id) index begins with the
client and serves the same lookups. Only the index is dropped (Django's AlterField would drop
and validate again the foreign key, a scan of every visitor)."""

import django.db.models.deletion
from django.db import migrations, models

INDEX = "delivery_visitor_client_id_35a1f792"


class Migration(migrations.Migration):
    dependencies = [
        ("coremetrics", "0003_client_is_heavy"),
        ("delivery", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    f'DROP INDEX IF EXISTS "{INDEX}"',
                    f'CREATE INDEX "{INDEX}" ON "delivery_visitor" ("client_id")',
                )
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="visitor",
                    name="client",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="visitors",
                        to="coremetrics.client",
                    ),
                )
            ],
        )
    ]
