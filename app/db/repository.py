"""The repository every service stands on: advanced-alchemy's, its base statement built once per model."""

from __future__ import annotations

from typing import Any, ClassVar

from advanced_alchemy.repository import ModelT, SQLAlchemyAsyncRepository
from sqlalchemy import Select, select

__all__ = ["Repository"]


class Repository(SQLAlchemyAsyncRepository[ModelT]):
    """advanced-alchemy's repository, but `select(model)` is built once per model, not at every
    construction: it was about a third of a service's construction, and a worker builds a dozen
    services per task. A `Select` is immutable (every refinement makes a new one), so one serves all."""

    _base_statements: ClassVar[dict[type[Any], Select[Any]]] = {}

    def __init__(self, *, statement: Select[Any] | None = None, **kwargs: Any) -> None:
        if statement is None:
            statement = self._base_statements.get(self.model_type)
            if statement is None:
                statement = self._base_statements[self.model_type] = select(self.model_type)
        super().__init__(statement=statement, **kwargs)
