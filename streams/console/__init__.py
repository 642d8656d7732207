"""The web console: the pipeline's own view on the worker's web server (``/console``).

``views`` holds the routes, ``render`` the HTML (every value escaped), ``auth`` the
optional token, ``data`` and ``lag`` the status queries, ``dead_letters`` the browse
and replay of the dead-letter topic, ``configs`` the project-config lookup.
"""
