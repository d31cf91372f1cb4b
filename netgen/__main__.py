"""`python -m netgen`: see netgen.cli."""
from .cli import main

raise SystemExit(main())
