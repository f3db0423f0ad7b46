"""Development-time generator of picklewarden's reviewed knowledge (``scripts/gen_knowledge.py`` drives it)."""
