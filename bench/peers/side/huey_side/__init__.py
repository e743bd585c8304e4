"""Huey peer: RedisHuey; results on or off from the bench environment."""
