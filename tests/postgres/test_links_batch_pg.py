"""A batch of links on PostgreSQL: every statement counted, the same for 20 or 200 links
(SQLAlchemy's insertmanyvalues sends the rows of a flush in one INSERT per table)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from tests.conftest import Builder
from tests.web.test_links_batch import (
    MOST_STATEMENTS,
    busy_lab,
    check_rows,
    items,
    statements_for,
)


def test_a_batch_takes_the_same_few_statements_for_20_or_200_links(pg_app):
    engine = pg_app.extensions["portal_db"].engine
    with Session(engine, expire_on_commit=False) as session:
        build = Builder(pg_app, session)
        few = statements_for(session, busy_lab(build, pg_app, "few"), items(20))
        lab = busy_lab(build, pg_app, "many")
        many = statements_for(session, lab, items(200))
        assert len(many) == len(few) <= MOST_STATEMENTS, many
        check_rows(session, lab, 200)
