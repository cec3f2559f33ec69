"""The shim against a real redis-server: counting, the yes boundary."""
from conftest import ask


def test_counts_and_yes_boundary(make_shim, redis):
    shim, sock = make_shim()
    answers = [ask(sock, "alice@example.org\n") for _ in range(5)]
    # limit 3: the 4th hit in the window is the first over the limit
    assert answers == [b"no", b"no", b"no", b"yes", b"yes"]
    assert redis.cli("GET", "senderwatch:default:alice@example.org") == "5"
    ttl = int(redis.cli("PTTL", "senderwatch:default:alice@example.org"))
    assert 0 < ttl <= 60000
