"""``python -m services.analyst``: settings → bootstrap → run."""

from services.analyst.service import SPEC
from shared.service import main

if __name__ == "__main__":
    main(SPEC)
