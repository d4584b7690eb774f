// Command test-runner is a minimal Gitea Actions runner used by the operator's integration and end-to-end tests.
//
// The official runner (act_runner) is not served by the Go module proxy reachable from our CI, so the tests run this
// stand-in instead. It speaks Gitea's real runner protocol (code.gitea.io/actions-proto-go over Connect) and is
// configured like the official runner image, so the operator cannot tell the difference:
//
//	GITEA_INSTANCE_URL               base URL of the Gitea instance
//	GITEA_RUNNER_REGISTRATION_TOKEN  registration token (global, org, user or repository scope)
//	GITEA_RUNNER_NAME                runner name (default: the host name)
//	GITEA_RUNNER_LABELS              comma-separated "name[:schema[:arg]]"; only the names are sent to Gitea
//	GITEA_RUNNER_EPHEMERAL           "true" or "1" registers an ephemeral runner
//
// It registers, declares its labels, polls for exactly one task, runs that job's `run:` steps with bash on the host in
// a fresh work directory, streams logs and step results back and exits 0 once the task is reported complete, whatever
// the job's result (even when not ephemeral: one runner process, one job). It does not run actions (`uses:` steps
// fail), containers, services or expressions other than `${{ matrix.<key> }}`.
//
// Forgejo (see forgejo.go) configures it the way the Forgejo runner is configured in a runner pod: FORGEJO_INSTANCE_URL,
// FORGEJO_RUNNER_REGISTRATION_TOKEN, FORGEJO_RUNNER_NAME and FORGEJO_RUNNER_LABELS for the shared registration token
// (the pod runs `forgejo-runner register` and `one-job`), or the arguments of `forgejo-runner one-job --url --uuid
// --token-url --handle --label --wait` for a runner registered over Forgejo's API. Against Forgejo it speaks Connect
// with the JSON codec.
//
// Exit codes: 0 after one task, 1 on configuration, registration or protocol errors, 143 on SIGTERM/SIGINT.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	runnerv1 "code.gitea.io/actions-proto-go/runner/v1"
	"code.gitea.io/actions-proto-go/runner/v1/runnerv1connect"
	"connectrpc.com/connect"
)

const version = "test-runner/0.1.0"

// pollInterval is how often an idle runner asks Gitea for a task (the official runner's default is 2s).
const pollInterval = time.Second

type config struct {
	instanceURL string
	token       string
	name        string
	labels      []string
	ephemeral   bool
	// forgejo selects the JSON codec; uuid and runnerToken, when set, are credentials issued by Forgejo's API (no
	// Register call); handle asks for exactly that job (FetchSingleTask, Forgejo >= 15).
	forgejo     bool
	uuid        string
	runnerToken string
	handle      string
}

func main() {
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	log.SetPrefix("[test-runner] ")
	var cfg config
	var err error
	if len(os.Args) > 1 && os.Args[1] == "one-job" {
		cfg, err = configFromOneJobArgs(os.Args[2:])
	} else {
		cfg, err = configFromEnv()
	}
	if err != nil {
		fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	err = run(ctx, cfg)
	switch {
	case ctx.Err() != nil:
		fmt.Fprintln(os.Stderr, "test-runner: stopped by a signal")
		os.Exit(143)
	case err != nil:
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "test-runner: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
	os.Exit(1)
}

func configFromEnv() (config, error) {
	if os.Getenv("FORGEJO_INSTANCE_URL") != "" {
		return forgejoConfigFromEnv()
	}
	cfg := config{
		instanceURL: strings.TrimRight(os.Getenv("GITEA_INSTANCE_URL"), "/"),
		token:       os.Getenv("GITEA_RUNNER_REGISTRATION_TOKEN"),
		name:        os.Getenv("GITEA_RUNNER_NAME"),
	}
	if cfg.instanceURL == "" {
		return cfg, errors.New("GITEA_INSTANCE_URL is not set")
	}
	if cfg.token == "" {
		return cfg, errors.New("GITEA_RUNNER_REGISTRATION_TOKEN is not set")
	}
	if cfg.name == "" {
		cfg.name, _ = os.Hostname()
	}
	labels, err := parseLabelNames(os.Getenv("GITEA_RUNNER_LABELS"))
	if err != nil {
		return cfg, err
	}
	cfg.labels = labels
	switch strings.ToLower(os.Getenv("GITEA_RUNNER_EPHEMERAL")) {
	case "true", "1":
		cfg.ephemeral = true
	case "", "false", "0":
	default:
		return cfg, fmt.Errorf("cannot parse GITEA_RUNNER_EPHEMERAL %q: expected true, 1, false or 0", os.Getenv("GITEA_RUNNER_EPHEMERAL"))
	}
	return cfg, nil
}

// parseLabelNames keeps the name of each "name[:schema[:arg]]" label. Gitea stores what the runner declares as the
// runner's labels and matches a job when every `runs-on` value is one of them (ActionRunner.CanMatchLabels), so the
// names are what makes matching work; the official runner also declares names only.
func parseLabelNames(raw string) ([]string, error) {
	var names []string
	for _, label := range strings.Split(raw, ",") {
		label = strings.TrimSpace(label)
		if label == "" {
			continue
		}
		name, _, _ := strings.Cut(label, ":")
		if name == "" {
			return nil, fmt.Errorf("cannot parse runner label %q: the name is empty", label)
		}
		names = append(names, name)
	}
	if len(names) == 0 {
		return nil, errors.New("GITEA_RUNNER_LABELS has no labels: a runner without labels never matches a job")
	}
	return names, nil
}

// client wraps the Connect client and adds the credentials Gitea issued at registration to every later call.
type client struct {
	rpc     runnerv1connect.RunnerServiceClient
	baseURL string
	uuid    string
	token   string
}

func request[T any](c *client, msg *T) *connect.Request[T] {
	req := connect.NewRequest(msg)
	req.Header().Set("x-runner-uuid", c.uuid)
	req.Header().Set("x-runner-token", c.token)
	return req
}

// transient reports errors that Gitea going down, shutting down or starting up can cause: the same call may succeed
// later. (A runner that gave up on them mid-task left its job in progress until Gitea's zombie-task timeout.)
func transient(err error) bool {
	// Gitea wraps some refusals in a gRPC status that connect reports as "unknown"; a deleted registration
	// ("rpc error: code = Unauthenticated desc = unregistered runner") never comes back, so it is final.
	if strings.Contains(err.Error(), "code = Unauthenticated") {
		return false
	}
	// A refused registration token ("runner registration token not found", "... has been invalidated, please use the
	// latest one": routers/api/actions/runner/runner.go in Gitea 1.26, plain errors that connect reports as "unknown")
	// is final too, as it is for Gitea's own runner, which exits when its registration is refused.
	if strings.Contains(err.Error(), "registration token") {
		return false
	}
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeUnknown, connect.CodeInternal, connect.CodeCanceled,
		connect.CodeDeadlineExceeded, connect.CodeAborted:
		return true
	}
	return false
}

// retry calls f until it succeeds, fails with an error that is not transient, or ctx ends.
func retry[T any](ctx context.Context, what string, f func(context.Context) (T, error)) (T, error) {
	for {
		result, err := f(ctx)
		if err == nil || !transient(err) || ctx.Err() != nil {
			if err != nil {
				err = fmt.Errorf("cannot %s: %w", what, err)
			}
			return result, err
		}
		log.Printf("cannot %s, retrying: %v", what, err)
		select {
		case <-ctx.Done():
		case <-time.After(pollInterval):
		}
	}
}

func run(ctx context.Context, cfg config) error {
	var options []connect.ClientOption
	if cfg.forgejo {
		options = append(options, connect.WithProtoJSON())
	}
	c := &client{
		rpc:     runnerv1connect.NewRunnerServiceClient(http.DefaultClient, cfg.instanceURL+"/api/actions", options...),
		baseURL: cfg.instanceURL,
	}

	if cfg.uuid != "" {
		c.uuid, c.token = cfg.uuid, cfg.runnerToken
		log.Printf("runner %q registered by the forge's API (uuid %s, labels %v, handle %q)", cfg.name, cfg.uuid, cfg.labels, cfg.handle)
	} else {
		registered, err := retry(ctx, "register with "+cfg.instanceURL, func(ctx context.Context) (*connect.Response[runnerv1.RegisterResponse], error) {
			return c.rpc.Register(ctx, connect.NewRequest(&runnerv1.RegisterRequest{
				Name: cfg.name, Token: cfg.token, Version: version, Labels: cfg.labels, Ephemeral: cfg.ephemeral,
			}))
		})
		if err != nil {
			return err
		}
		c.uuid, c.token = registered.Msg.Runner.Uuid, registered.Msg.Runner.Token
		log.Printf("registered runner %q (id %d, labels %v, ephemeral %v)", cfg.name, registered.Msg.Runner.Id, cfg.labels, cfg.ephemeral)
	}
	// Test hooks: TEST_RUNNER_REGISTER_ONLY leaves a registration that never reached Gitea again (a runner whose pod
	// died right after registering); TEST_RUNNER_FETCH_DELAY holds a registered runner idle before it asks for a task.
	if os.Getenv("TEST_RUNNER_REGISTER_ONLY") == "true" {
		return nil
	}
	if raw := os.Getenv("TEST_RUNNER_FETCH_DELAY"); raw != "" {
		delay, err := time.ParseDuration(raw)
		if err != nil {
			return fmt.Errorf("cannot parse TEST_RUNNER_FETCH_DELAY %q: %w", raw, err)
		}
		log.Printf("waiting %s before asking for a task", delay)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}

	if _, err := retry(ctx, "declare labels", func(ctx context.Context) (*connect.Response[runnerv1.DeclareResponse], error) {
		return c.rpc.Declare(ctx, request(c, &runnerv1.DeclareRequest{Version: version, Labels: cfg.labels}))
	}); err != nil {
		return err
	}

	fetch := fetchOneTask
	if cfg.handle != "" {
		fetch = func(ctx context.Context, c *client) (*runnerv1.Task, error) {
			return fetchSingleTask(ctx, c, cfg.handle)
		}
	}
	task, err := fetch(ctx, c)
	if err != nil {
		return err
	}
	return runTask(ctx, c, cfg, task)
}

func fetchOneTask(ctx context.Context, c *client) (*runnerv1.Task, error) {
	var tasksVersion int64
	for {
		fetched, err := retry(ctx, "fetch a task", func(ctx context.Context) (*connect.Response[runnerv1.FetchTaskResponse], error) {
			// Gitea assigns the task before answering: a request aborted by SIGTERM could leave it assigned to a
			// runner that never heard of it (running until Gitea's zombie timeout). Finish the call, then stop.
			callCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			return c.rpc.FetchTask(callCtx, request(c, &runnerv1.FetchTaskRequest{TasksVersion: tasksVersion}))
		})
		if err != nil {
			return nil, err
		}
		if fetched.Msg.Task != nil {
			return fetched.Msg.Task, nil
		}
		tasksVersion = fetched.Msg.TasksVersion
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}
