"""``python -m services.engineer``: settings → bootstrap → run."""

from services.engineer.service import SPEC
from shared.service import main

if __name__ == "__main__":
    main(SPEC)
