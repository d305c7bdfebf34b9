"""API keys for tests, made the way /admin/api-keys makes them."""

from portal.services.api_keys import create_api_key


def make_api_key(session, lab, name: str = "LIS") -> str:
    created = create_api_key(session, lab.id, name, actor_id=None, ip=None)
    session.commit()
    return created.key
