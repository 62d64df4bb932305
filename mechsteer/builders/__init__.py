"""Vector builders (layer 8): turn a condition's vector specs into VectorSets for one loaded model. Each kind's
builder is named by its spec class's registration in `mechsteer.spec.kinds`; `BuildContext` resolves
dependencies between sets."""
