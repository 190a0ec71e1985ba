"""The runner: connects out to the hub, runs tasks as real processes, streams their output.

Never imports hub/ (nor aiohttp or aiosqlite): it ships alone as a frozen executable.
"""
