"""The problem templates, one module per family: 35 templates in 5 families."""

from __future__ import annotations

from wmtp.data.synthetic.spec import Template
from wmtp.data.synthetic.templates import arithmetic, conditionals, lists, loops, strings

FAMILIES = ("arithmetic", "strings", "lists", "conditionals", "loops")

TEMPLATES: tuple[Template, ...] = (
    arithmetic.TEMPLATES + strings.TEMPLATES + lists.TEMPLATES + conditionals.TEMPLATES + loops.TEMPLATES
)
