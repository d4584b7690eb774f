package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	runnerv1 "code.gitea.io/actions-proto-go/runner/v1"
	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"
	"gopkg.in/yaml.v3"
)

// workflowJob is the part of Gitea's single-job workflow payload this runner understands. Gitea expands a matrix
// into one payload per combination, with each key's value as a one-element list.
type workflowJob struct {
	Name     string                          `yaml:"name"`
	Env      map[string]string               `yaml:"env"`
	Strategy struct{ Matrix map[string]any } `yaml:"strategy"`
	Steps    []workflowStep                  `yaml:"steps"`
}

type workflowStep struct {
	Name             string            `yaml:"name"`
	Run              string            `yaml:"run"`
	Uses             string            `yaml:"uses"`
	Env              map[string]string `yaml:"env"`
	WorkingDirectory string            `yaml:"working-directory"`
}

func parseWorkflowJob(payload []byte) (string, workflowJob, error) {
	var workflow struct {
		Env  map[string]string      `yaml:"env"`
		Jobs map[string]workflowJob `yaml:"jobs"`
	}
	if err := yaml.Unmarshal(payload, &workflow); err != nil {
		return "", workflowJob{}, fmt.Errorf("cannot parse the task's workflow payload: %w", err)
	}
	if len(workflow.Jobs) != 1 {
		return "", workflowJob{}, fmt.Errorf("cannot run the task: its workflow payload has %d jobs, expected 1", len(workflow.Jobs))
	}
	var id string
	var job workflowJob
	for id, job = range workflow.Jobs { // takes the only entry
	}
	env := map[string]string{}
	maps.Copy(env, workflow.Env)
	maps.Copy(env, job.Env)
	job.Env = env
	return id, job, nil
}

var matrixExpression = regexp.MustCompile(`\$\{\{\s*matrix\.([A-Za-z0-9_-]+)\s*\}\}`)

// substituteMatrix replaces `${{ matrix.<key> }}` with the combination's value; other expressions stay as they are.
func substituteMatrix(text string, matrix map[string]any) string {
	return matrixExpression.ReplaceAllStringFunc(text, func(expression string) string {
		value, ok := matrix[matrixExpression.FindStringSubmatch(expression)[1]]
		if !ok {
			return expression
		}
		if list, isList := value.([]any); isList && len(list) == 1 {
			value = list[0]
		}
		return fmt.Sprint(value)
	})
}

// reporter collects log rows and step states and sends them to Gitea once a second and when the task ends.
type reporter struct {
	client *client
	mu     sync.Mutex
	state  *runnerv1.TaskState
	rows   []*runnerv1.LogRow
	acked  int64 // rows Gitea has acknowledged
	cancel context.CancelFunc
	// cancelledInGitea is set when Gitea answers a state update with "cancelled": the task is already final there
	// (and an ephemeral runner already deleted), so there is nothing left to report.
	cancelledInGitea bool
}

func (r *reporter) logf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rows = append(r.rows, &runnerv1.LogRow{Time: timestamppb.Now(), Content: fmt.Sprintf(format, args...)})
}

// startStep marks a step as running; its log starts at the next row.
func (r *reporter) startStep(index int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	step := r.state.Steps[index]
	step.StartedAt, step.LogIndex = timestamppb.Now(), int64(len(r.rows))
}

// finishStep records a step's result; its log is every row since it started.
func (r *reporter) finishStep(index int, result runnerv1.Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	step := r.state.Steps[index]
	step.Result = result
	if step.StartedAt != nil {
		step.StoppedAt, step.LogLength = timestamppb.Now(), int64(len(r.rows))-step.LogIndex
	}
}

// flush sends the unacknowledged log rows, then the task state. Logs go first: Gitea deletes an ephemeral runner as
// soon as it stores a final task state, after which the runner can no longer upload logs.
func (r *reporter) flush(ctx context.Context, final bool) error {
	r.mu.Lock()
	rows := r.rows[r.acked:]
	index := r.acked
	state := cloneState(r.state)
	r.mu.Unlock()

	if len(rows) > 0 || final {
		logged, err := retry(ctx, "upload logs", func(ctx context.Context) (*connect.Response[runnerv1.UpdateLogResponse], error) {
			return r.client.rpc.UpdateLog(ctx, request(r.client, &runnerv1.UpdateLogRequest{
				TaskId: state.Id, Index: index, Rows: rows, NoMore: final,
			}))
		})
		if err != nil {
			return err
		}
		r.mu.Lock()
		r.acked = logged.Msg.AckIndex
		r.mu.Unlock()
	}
	updated, err := retry(ctx, "update the task state", func(ctx context.Context) (*connect.Response[runnerv1.UpdateTaskResponse], error) {
		return r.client.rpc.UpdateTask(ctx, request(r.client, &runnerv1.UpdateTaskRequest{State: state}))
	})
	if err != nil {
		return err
	}
	if !final && updated.Msg.State.GetResult() == runnerv1.Result_RESULT_CANCELLED {
		log.Printf("task %d was cancelled in Gitea", state.Id)
		r.mu.Lock()
		r.cancelledInGitea = true
		r.mu.Unlock()
		r.cancel()
	}
	return nil
}

func cloneState(state *runnerv1.TaskState) *runnerv1.TaskState {
	clone := &runnerv1.TaskState{Id: state.Id, Result: state.Result, StartedAt: state.StartedAt, StoppedAt: state.StoppedAt}
	for _, step := range state.Steps {
		clone.Steps = append(clone.Steps, &runnerv1.StepState{
			Id: step.Id, Result: step.Result, StartedAt: step.StartedAt, StoppedAt: step.StoppedAt,
			LogIndex: step.LogIndex, LogLength: step.LogLength,
		})
	}
	return clone
}

// runTask runs the job's steps and reports the result. It returns an error only when Gitea cannot be told the outcome.
func runTask(ctx context.Context, c *client, cfg config, task *runnerv1.Task) error {
	jobCtx, cancelJob := context.WithCancel(ctx)
	defer cancelJob()
	r := &reporter{client: c, cancel: cancelJob, state: &runnerv1.TaskState{Id: task.Id, StartedAt: timestamppb.Now()}}

	jobID, job, parseErr := parseWorkflowJob(task.WorkflowPayload)
	for i := range job.Steps {
		r.state.Steps = append(r.state.Steps, &runnerv1.StepState{Id: int64(i)})
	}
	log.Printf("running task %d: job %q (%s) with %d steps", task.Id, jobID, job.Name, len(job.Steps))

	done, flusherStopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(flusherStopped)
		ticker := time.NewTicker(time.Second)
		defer ticker.Stop()
		for {
			select {
			case <-done:
				return
			case <-ticker.C:
				if err := r.flush(jobCtx, false); err != nil && jobCtx.Err() == nil {
					log.Printf("%v", err)
				}
			}
		}
	}()

	result := runnerv1.Result_RESULT_FAILURE
	if parseErr != nil {
		r.logf("test-runner: %v", parseErr)
	} else {
		result = runSteps(jobCtx, r, cfg, task, jobID, job)
	}
	close(done)
	<-flusherStopped // the final report must not race a periodic one

	if ctx.Err() != nil {
		// Stopped by a signal: tell Gitea briefly, then let main exit.
		result = runnerv1.Result_RESULT_CANCELLED
		var cancelReport context.CancelFunc
		ctx, cancelReport = context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancelReport()
	} else if jobCtx.Err() != nil {
		result = runnerv1.Result_RESULT_CANCELLED
	}
	r.mu.Lock()
	cancelledInGitea := r.cancelledInGitea
	r.mu.Unlock()
	if cancelledInGitea {
		log.Printf("task %d ended: cancelled in Gitea", task.Id)
		return nil
	}
	r.logf("test-runner: job finished: %s", strings.TrimPrefix(result.String(), "RESULT_"))
	r.mu.Lock()
	r.state.Result, r.state.StoppedAt = result, timestamppb.Now()
	r.mu.Unlock()
	if err := r.flush(ctx, true); err != nil {
		return err
	}
	log.Printf("task %d reported complete: %s", task.Id, result)
	return nil
}

func runSteps(ctx context.Context, r *reporter, cfg config, task *runnerv1.Task, jobID string, job workflowJob) runnerv1.Result {
	jobDir, err := os.MkdirTemp("", "test-runner-job-")
	if err == nil {
		err = os.Mkdir(filepath.Join(jobDir, "workspace"), 0o700)
	}
	if err != nil {
		r.logf("test-runner: cannot create a work directory: %v", err)
		return runnerv1.Result_RESULT_FAILURE
	}
	defer os.RemoveAll(jobDir)
	env := jobEnv(cfg, task, jobID, jobDir, job.Env)

	for i, step := range job.Steps {
		if ctx.Err() != nil {
			return runnerv1.Result_RESULT_CANCELLED
		}
		r.startStep(i)
		stepResult := runStep(ctx, r, step, job.Strategy.Matrix, jobDir, env)
		r.finishStep(i, stepResult)
		if stepResult != runnerv1.Result_RESULT_SUCCESS {
			for later := i + 1; later < len(job.Steps); later++ {
				r.finishStep(later, runnerv1.Result_RESULT_SKIPPED)
			}
			return stepResult
		}
	}
	return runnerv1.Result_RESULT_SUCCESS
}

// runStep runs one `run:` step with bash in jobDir/workspace, logging its output line by line.
func runStep(ctx context.Context, r *reporter, step workflowStep, matrix map[string]any, jobDir string, jobEnv []string) runnerv1.Result {
	name := step.Name
	if name == "" {
		name = firstLine(step.Run)
	}
	r.logf("test-runner: step %q", substituteMatrix(name, matrix))
	if step.Uses != "" {
		r.logf("test-runner: cannot run `uses: %s`: this test runner only runs `run:` steps", step.Uses)
		return runnerv1.Result_RESULT_FAILURE
	}

	script := filepath.Join(jobDir, "step.sh")
	if err := os.WriteFile(script, []byte(substituteMatrix(step.Run, matrix)), 0o600); err != nil {
		r.logf("test-runner: cannot write the step script: %v", err)
		return runnerv1.Result_RESULT_FAILURE
	}
	defer os.Remove(script)

	cmd := exec.CommandContext(ctx, "bash", "--noprofile", "--norc", "-eo", "pipefail", script)
	cmd.Dir = filepath.Join(jobDir, "workspace")
	if filepath.IsAbs(step.WorkingDirectory) {
		cmd.Dir = step.WorkingDirectory
	} else if step.WorkingDirectory != "" {
		cmd.Dir = filepath.Join(cmd.Dir, step.WorkingDirectory)
	}
	cmd.Env = jobEnv
	for _, key := range sortedKeys(step.Env) {
		cmd.Env = append(cmd.Env, key+"="+substituteMatrix(step.Env[key], matrix))
	}
	// Run the step in its own process group so cancellation also stops what the script started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	output, writer := io.Pipe()
	cmd.Stdout, cmd.Stderr = writer, writer
	if err := cmd.Start(); err != nil {
		r.logf("test-runner: cannot start bash: %v", err)
		return runnerv1.Result_RESULT_FAILURE
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		lines := bufio.NewScanner(output)
		lines.Buffer(make([]byte, 64*1024), 1024*1024)
		for lines.Scan() {
			r.logf("%s", lines.Text())
		}
		_, _ = io.Copy(io.Discard, output)
	}()
	err := cmd.Wait()
	writer.Close()
	<-copied
	switch {
	case ctx.Err() != nil:
		r.logf("test-runner: step cancelled")
		return runnerv1.Result_RESULT_CANCELLED
	case err != nil:
		r.logf("test-runner: step failed: %v", err)
		return runnerv1.Result_RESULT_FAILURE
	}
	return runnerv1.Result_RESULT_SUCCESS
}

// jobEnv is the host environment plus the minimal GITHUB_* / GITEA_* variables scripts commonly read.
func jobEnv(cfg config, task *runnerv1.Task, jobID, jobDir string, env map[string]string) []string {
	result := append(os.Environ(),
		"CI=true", "GITHUB_ACTIONS=true", "GITEA_ACTIONS=true", "GITHUB_JOB="+jobID, "RUNNER_NAME="+cfg.name,
		"GITHUB_WORKSPACE="+filepath.Join(jobDir, "workspace"), "RUNNER_TEMP="+jobDir,
	)
	fields := task.GetContext().GetFields()
	for _, key := range []string{"repository", "repository_owner", "sha", "ref", "ref_name", "run_id", "run_number",
		"run_attempt", "server_url", "api_url", "actor", "event_name", "workflow"} {
		if value, ok := fields[key]; ok {
			text := value.GetStringValue()
			if text == "" {
				text = strings.TrimSpace(fmt.Sprint(value.AsInterface()))
			}
			result = append(result, "GITHUB_"+strings.ToUpper(key)+"="+text, "GITEA_"+strings.ToUpper(key)+"="+text)
		}
	}
	for _, key := range sortedKeys(env) {
		result = append(result, key+"="+env[key])
	}
	return result
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for key := range m {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	return keys
}

func firstLine(text string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(text), "\n")
	return line
}
