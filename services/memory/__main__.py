"""``python -m services.memory``: settings → bootstrap → run."""

from services.memory.service import SPEC
from shared.service import main

if __name__ == "__main__":
    main(SPEC)
