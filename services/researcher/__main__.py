"""``python -m services.researcher``: settings → bootstrap → run."""

from services.researcher.service import SPEC
from shared.service import main

if __name__ == "__main__":
    main(SPEC)
