"""The problem templates, one module per family: 35 templates in 5 families."""

from __future__ import annotations

from wmtp.data.synthetic.spec import Template
from wmtp.data.synthetic.templates.arithmetic import TEMPLATES as ARITHMETIC
from wmtp.data.synthetic.templates.conditionals import TEMPLATES as CONDITIONALS
from wmtp.data.synthetic.templates.lists import TEMPLATES as LISTS
from wmtp.data.synthetic.templates.loops import TEMPLATES as LOOPS
from wmtp.data.synthetic.templates.strings import TEMPLATES as STRINGS

FAMILIES = ("arithmetic", "strings", "lists", "conditionals", "loops")

TEMPLATES: tuple[Template, ...] = ARITHMETIC + STRINGS + LISTS + CONDITIONALS + LOOPS
