"""The snippet a client pastes into their pages (T1)."""

import json

SNIPPET = (
    "<script>\n"
    "(function(w,d,n,s){{w.CoremetricsObject=n;w[n]=w[n]||function(){{(w[n].q=w[n].q||[])"
    ".push(arguments)}};var t=d.createElement('script');t.async=true;t.src=s;"
    "d.head.appendChild(t)}})(window,document,'cm',{});\n"
    "cm('track','page_view');\n"
    "</script>"
)


def tag_url(*, base_url: str, public_key: str) -> str:
    return f"{base_url.rstrip('/')}/t/v1/{public_key}.js"


def tag_snippet(*, base_url: str, public_key: str) -> str:
    """The HTML to paste before </head>: loads the tag asynchronously with a command queue."""
    # A JSON string is a valid JS string; escaping "<" keeps "</script>" from closing the tag.
    source = json.dumps(tag_url(base_url=base_url, public_key=public_key)).replace("<", "\\u003c")
    return SNIPPET.format(source)
