module gitea-runner-operator/test-runner

go 1.25

require (
	code.gitea.io/actions-proto-go v0.4.1
	connectrpc.com/connect v1.19.1
	google.golang.org/protobuf v1.36.11
	gopkg.in/yaml.v3 v3.0.1
)
