from clientlib import main

from dramatiq_side.tasks import noop, rt

main(one=noop.send, roundtrip=lambda: rt.send().get_result(block=True, timeout=30_000))
