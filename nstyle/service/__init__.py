"""The HTTP service behind ``nstyle serve``: a job queue, its store and the web page.

    from nstyle.service.app import create_app
    from nstyle.service.settings import ServiceSettings
    app = create_app(ServiceSettings(data_dir="jobs"))   # an ASGI app (FastAPI)

Modules: ``settings`` (limits and options of one server), ``errors`` (the service's own
4xx cases), ``uploads`` (checks a submission before anything is stored), ``store``
(SQLite records and job folders), ``jobs`` (queue, workers, live progress), ``app`` (the
routes), ``server`` (the ``nstyle serve`` command line). The engine is used only through
its public API (``Config``, ``prepare``, ``Stylizer``, ``build_record``).

Needs the ``service`` extra (fastapi, uvicorn, python-multipart); importing this package
alone imports none of them.
"""
