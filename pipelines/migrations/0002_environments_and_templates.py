from django.db import migrations

from pipelines.builtins import ensure_builtin_rows


def create(apps, schema_editor):
    ensure_builtin_rows(apps.get_model("pipelines", "Environment"), apps.get_model("pipelines", "Template"))


class Migration(migrations.Migration):
    dependencies = [("pipelines", "0001_initial")]
    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
