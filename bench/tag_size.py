"""The tag's size budget (T1): at most 4 KB gzipped, as served to a browser.

.venv/bin/python bench/tag_size.py      # prints sizes and a JSON line; exit 1 over budget
"""

import gzip
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "coremetrics.settings")
os.environ.setdefault("SECRET_KEY", "bench-only")

import django

django.setup()

from delivery.tag import tag_body, tag_config  # noqa: E402

BUDGET = 4096

source = (Path(__file__).resolve().parent.parent / "static" / "cm" / "tag.js").read_bytes()
served = tag_body(
    tag_config(
        public_key="cm_0123456789abcdef", cookie_domain="", consent_mode="implied", timeout_ms=1500
    )
).body
figures = {
    "source_bytes": len(source),
    "served_bytes": len(served),
    "served_gzip_bytes": len(gzip.compress(served, 9)),
    "budget_gzip_bytes": BUDGET,
}
print(json.dumps(figures))
sys.exit(0 if figures["served_gzip_bytes"] <= BUDGET else 1)
