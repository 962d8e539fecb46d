// Empty stand-in: k8s.io/kubernetes requires k8s.io/sample-apiserver v0.0.0
// (a staging module) but nothing built here imports it, and the proxy has no
// v0.36.x of it.
module k8s.io/sample-apiserver

go 1.26.0
