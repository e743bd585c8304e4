from clientlib import main

from huey_side.tasks import noop, rt

main(one=noop, roundtrip=lambda: rt().get(blocking=True, timeout=30))
