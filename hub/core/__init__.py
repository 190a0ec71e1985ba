"""The task core: life cycle, dispatch, what runners report, output storage, the links to
runners and the spec a task is run from. No HTTP here: the web shell (app, routes, gateway,
api/) calls in.
"""
