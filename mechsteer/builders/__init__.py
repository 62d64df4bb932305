"""Vector builders (layer 6, with training): turn a condition's vector specs into VectorSets for one loaded
model. Each kind's builder is named by its spec class's registration in `mechsteer.spec.kinds`;
`BuildContext` (`context`) calls them and resolves dependencies between sets."""
