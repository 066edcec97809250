"""The profile's client index goes: the unique (client, visitor_id) index begins with the
client and serves the same lookups. Only the index is dropped (Django's AlterField would drop
and validate again the foreign key, a scan of every profile)."""

import django.db.models.deletion
from django.db import migrations, models

INDEX = "aggregation_profile_client_id_3a16ba06"


class Migration(migrations.Migration):
    dependencies = [
        ("aggregation", "0008_profile_tally_text"),
        ("coremetrics", "0003_client_is_heavy"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    f'DROP INDEX IF EXISTS "{INDEX}"',
                    f'CREATE INDEX "{INDEX}" ON "aggregation_profile" ("client_id")',
                )
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="profile",
                    name="client",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="profiles",
                        to="coremetrics.client",
                    ),
                )
            ],
        )
    ]
