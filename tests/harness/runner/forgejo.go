package main

// The Forgejo modes of the test runner, configured as the operator configures the Forgejo runner in a runner pod
// (src/runner_group/forgejo_runner.ts):
//
//   - shared registration token (Forgejo < 15): FORGEJO_INSTANCE_URL, FORGEJO_RUNNER_REGISTRATION_TOKEN,
//     FORGEJO_RUNNER_NAME, FORGEJO_RUNNER_LABELS; it registers (Register) and takes one task (FetchTask);
//   - a runner registered over Forgejo's API (Forgejo >= 15): the arguments of
//     `forgejo-runner one-job --url URL --uuid UUID --token-url file:PATH [--handle H] --label L... --wait`; it reads
//     the token from the file, declares its labels and asks for exactly the job with that handle (FetchSingleTask,
//     which Gitea's actions-proto-go does not have: it is called as plain Connect JSON).
//
// The stand-in kubelet puts a pod's Secret volumes under TEST_RUNNER_ROOT, so `file:` paths are read from there.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	runnerv1 "code.gitea.io/actions-proto-go/runner/v1"
	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
)

func forgejoConfigFromEnv() (config, error) {
	cfg := config{
		instanceURL: strings.TrimRight(os.Getenv("FORGEJO_INSTANCE_URL"), "/"),
		token:       os.Getenv("FORGEJO_RUNNER_REGISTRATION_TOKEN"),
		name:        os.Getenv("FORGEJO_RUNNER_NAME"),
		forgejo:     true,
	}
	if cfg.token == "" {
		return cfg, errors.New("FORGEJO_RUNNER_REGISTRATION_TOKEN is not set")
	}
	if cfg.name == "" {
		cfg.name, _ = os.Hostname()
	}
	labels, err := parseLabelNames(os.Getenv("FORGEJO_RUNNER_LABELS"))
	cfg.labels = labels
	return cfg, err
}

type labelFlags []string

func (l *labelFlags) String() string     { return strings.Join(*l, ",") }
func (l *labelFlags) Set(v string) error { *l = append(*l, v); return nil }

// configFromOneJobArgs reads the flags of `forgejo-runner one-job` that the operator passes.
func configFromOneJobArgs(args []string) (config, error) {
	flags := flag.NewFlagSet("one-job", flag.ContinueOnError)
	url := flags.String("url", "", "Forgejo instance URL")
	uuid := flags.String("uuid", "", "runner uuid")
	tokenURL := flags.String("token-url", "", "where the runner token is: file:PATH")
	handle := flags.String("handle", "", "the handle of the job to run")
	flags.Bool("wait", false, "wait for the job (this runner always waits)")
	var labels labelFlags
	flags.Var(&labels, "label", "runner label (repeated)")
	if err := flags.Parse(args); err != nil {
		return config{}, err
	}
	if *url == "" || *uuid == "" || *tokenURL == "" {
		return config{}, errors.New("one-job needs --url, --uuid and --token-url")
	}
	path, ok := strings.CutPrefix(*tokenURL, "file:")
	if !ok {
		return config{}, fmt.Errorf("cannot read --token-url %q: only file: URLs are supported", *tokenURL)
	}
	path = strings.TrimPrefix(path, "//")
	if root := os.Getenv("TEST_RUNNER_ROOT"); root != "" {
		path = filepath.Join(root, path)
	}
	token, err := os.ReadFile(path)
	if err != nil {
		return config{}, fmt.Errorf("cannot read the runner token: %w", err)
	}
	names, err := parseLabelNames(strings.Join(labels, ","))
	if err != nil {
		return config{}, err
	}
	name := os.Getenv("FORGEJO_RUNNER_NAME")
	if name == "" {
		name, _ = os.Hostname()
	}
	return config{
		instanceURL: strings.TrimRight(*url, "/"),
		name:        name,
		labels:      names,
		forgejo:     true,
		uuid:        *uuid,
		runnerToken: strings.TrimSpace(string(token)),
		handle:      *handle,
	}, nil
}

// connectError is a Connect error answer: {"code": "...", "message": "..."}.
type connectError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// fetchSingleTask polls FetchSingleTask until the job with `handle` is handed out.
func fetchSingleTask(ctx context.Context, c *client, handle string) (*runnerv1.Task, error) {
	var tasksVersion int64
	for {
		task, latest, err := retryFetch(ctx, func(ctx context.Context) (*runnerv1.Task, int64, error) {
			callCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			return callFetchSingleTask(callCtx, c, tasksVersion, handle)
		})
		if err != nil {
			return nil, err
		}
		if task != nil {
			return task, nil
		}
		tasksVersion = latest
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

func retryFetch(ctx context.Context, f func(context.Context) (*runnerv1.Task, int64, error)) (*runnerv1.Task, int64, error) {
	for {
		task, latest, err := f(ctx)
		if err == nil || !transient(err) || ctx.Err() != nil {
			if err != nil {
				err = fmt.Errorf("cannot fetch a task: %w", err)
			}
			return task, latest, err
		}
		select {
		case <-ctx.Done():
		case <-time.After(pollInterval):
		}
	}
}

func callFetchSingleTask(ctx context.Context, c *client, tasksVersion int64, handle string) (*runnerv1.Task, int64, error) {
	body, _ := json.Marshal(map[string]string{"tasksVersion": strconv.FormatInt(tasksVersion, 10), "handle": handle})
	request, err := http.NewRequestWithContext(ctx, http.MethodPost,
		c.baseURL+"/api/actions/runner.v1.RunnerService/FetchSingleTask", bytes.NewReader(body))
	if err != nil {
		return nil, 0, err
	}
	request.Header.Set("Content-Type", "application/json")
	request.Header.Set("Connect-Protocol-Version", "1")
	request.Header.Set("x-runner-uuid", c.uuid)
	request.Header.Set("x-runner-token", c.token)
	response, err := http.DefaultClient.Do(request)
	if err != nil {
		return nil, 0, connect.NewError(connect.CodeUnavailable, err)
	}
	defer response.Body.Close()
	data, err := io.ReadAll(response.Body)
	if err != nil {
		return nil, 0, connect.NewError(connect.CodeUnavailable, err)
	}
	if response.StatusCode == http.StatusNotFound {
		return nil, 0, connect.NewError(connect.CodeUnimplemented, errors.New("FetchSingleTask is not served (Forgejo < 15)"))
	}
	if response.StatusCode != http.StatusOK {
		var answer connectError
		_ = json.Unmarshal(data, &answer)
		code := connect.CodeUnavailable
		if answer.Code == "unauthenticated" {
			code = connect.CodeUnauthenticated
		} else if response.StatusCode < 500 {
			code = connect.CodeInvalidArgument
		}
		return nil, 0, connect.NewError(code, fmt.Errorf("FetchSingleTask answered %d: %s", response.StatusCode, strings.TrimSpace(string(data))))
	}
	var answer struct {
		Task         json.RawMessage `json:"task"`
		TasksVersion json.Number     `json:"tasksVersion"`
	}
	if err := json.Unmarshal(data, &answer); err != nil {
		return nil, 0, fmt.Errorf("cannot parse the FetchSingleTask answer: %w", err)
	}
	latest, _ := answer.TasksVersion.Int64()
	if len(answer.Task) == 0 || string(answer.Task) == "null" {
		return nil, latest, nil
	}
	task := &runnerv1.Task{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(answer.Task, task); err != nil {
		return nil, 0, fmt.Errorf("cannot parse the task: %w", err)
	}
	return task, latest, nil
}
