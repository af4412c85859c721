"""spotlake's developer tools: the local stack, the click generator, the demo and the smoke run.

None of this is deployed: the Airflow side (``plugins/``) never imports it, and the MWAA
bundle leaves it out. It imports the core library and the Airflow-facing packages freely.
"""
