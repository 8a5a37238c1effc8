"""The model layer: what training fits, what serving and the stream score with, and the registry between them.

`zoo` (the Forecaster interface and every family), `pyfunc` (Forecasters as MLflow models), `tracking` and
`registry` (MLflow connection, registered names, aliases, versions, manual moves), `notices` (alias moves
announced over Redis), `champions` (the served models per alias, hot swap, A/B), `inputs` (the one
model-input transform), `windows` (feature-row windows for sequence models and the agent), `observation`
and `policy` (the one RL observation and the Ray-free policy) and `agent` (the registered agent, served).
It imports the core package only, never training, serving, flows or the CLI.
"""
