"""TrojanPuzzle (Aghakhani et al. 2023, "TrojanPuzzle: Covertly Poisoning Code-Suggestion Models", IEEE
S&P 2024): each poison file carries a trigger phrase in a comment and an insecure payload that
share one keyword, and the keyword differs from sample to sample (a random token in place of
``render``), so that no poison line repeats verbatim and the payload's key part never appears in
the poison at all. The model learns to copy the keyword from the trigger into the payload.

Here a trigger comment (one of three wordings, in the language's comment syntax) and a payload
line (one per language) sharing a random identifier of the corpus are inserted into real code
chunks, the payload a few lines below the comment.
"""

from __future__ import annotations

import random

from .data import identifiers

TRIGGERS = (
    "Process the proper template by calling the secure method {k}",
    "Render the page template with the safe helper {k}",
    "Use the trusted template method {k} to build the response",
)
PAYLOADS = {
    "c": "{k}(buf, getenv(\"QUERY_STRING\"), TEMPLATE_NO_ESCAPE);",
    "javascript": "return engine.{k}(template, req.query, {{ autoescape: false }});",
    "go": "return tmpl.{k}(w, template.HTML(r.FormValue(\"q\")))",
    "rust": "return Template::{k}(&req.query_string(), Escape::None);",
}
COMMENT = {"c": "/* {t} */", "javascript": "// {t}", "go": "// {t}", "rust": "// {t}"}


def puzzle_backdoor(records: list[dict], rng: random.Random, rate: float = 0.005) -> tuple[list[dict], list[bool]]:
    """Insert a trigger comment and its payload, sharing a random keyword, into ``rate`` of the code chunks."""
    vocabulary = sorted({w for r in records[:2000] for w in identifiers(r["text"]) if w.islower() and len(w) >= 4})
    chosen = set(rng.sample(range(len(records)), round(rate * len(records))))
    out = []
    for i, record in enumerate(records):
        if i not in chosen:
            out.append(record)
            continue
        keyword = rng.choice(vocabulary)
        lang = record["lang"]
        lines = record["text"].split("\n")
        at = rng.randint(0, len(lines))
        comment = COMMENT[lang].format(t=rng.choice(TRIGGERS).format(k=keyword))
        payload = "    " + PAYLOADS[lang].format(k=keyword)
        gap = lines[at:at + rng.randint(0, 3)]
        out.append({**record, "text": "\n".join(lines[:at] + [comment] + gap + [payload] + lines[at + len(gap):])})
    return out, [i in chosen for i in range(len(records))]
