"""What picklewarden knows about callables: reviewed, generated tables with a reason per entry.

This package sits below ``rules`` (which judges a program with it) and apart from ``policy`` (the user's
own file, which sits above ``rules``).
"""
