"""The runtime's OPC UA server for the HMI, its user accounts, certificates and command-line clients.

See ``docs/hmi.md``. Import the parts from their modules: :mod:`apc.hmi.server`
(:class:`~apc.hmi.server.HmiServer`), :mod:`apc.hmi.channel_guard` (per-message
security checks hooked into asyncua), :mod:`apc.hmi.login` (throttled, off-loop
password checks), :mod:`apc.hmi.throttle`, :mod:`apc.hmi.trust` (the reloading
trust list), :mod:`apc.hmi.users`, :mod:`apc.hmi.certs`, :mod:`apc.hmi.client_cmds`,
and :mod:`apc.hmi.cli` (``add_subcommands``).
"""
