"""Kept tallies as text compressed by lz4: nothing queries inside them, and writing them as
jsonb (parsed, then compressed by pglz) took PostgreSQL twice as long."""

from django.db import migrations, models

# lz4 where the server was built with it (as Debian's and the official images are); pglz, the
# default, otherwise. (Django 5.2 asks for PostgreSQL 14 or later, which has SET COMPRESSION.)
LZ4 = """
DO $$
BEGIN
    ALTER TABLE aggregation_profile ALTER COLUMN tally SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 compression not available: kept tallies stay compressed by pglz';
END
$$
"""


def tallies_compress_with_lz4(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(LZ4)


class Migration(migrations.Migration):
    dependencies = [
        ("aggregation", "0007_profile_tally"),
    ]

    operations = [
        migrations.AlterField(
            model_name="profile",
            name="tally",
            field=models.TextField(blank=True, editable=False, null=True),
        ),
        migrations.RunPython(tallies_compress_with_lz4, migrations.RunPython.noop),
    ]
