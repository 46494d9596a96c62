//! The revert writer: when analysis fails a release a GitSync applied, revert the commits that
//! declared it, so Git, cluster and traffic agree on stable again.
//!
//! What to do next is a pure function of the Rollout ([`next_step`]); which commits to revert is a
//! pure function of the history ([`select`]). The state lives in the Rollout's `status.gitRevert`,
//! written **before** each push: a restart finds the revert commit there and pushes that one again
//! (a no-op when it already landed), so the remote never gets two.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, PostParams};
use kube::{Client, Resource, ResourceExt};

use crate::api::conditions::{self, reasons, types};
use crate::api::gitsync::{DEFAULT_REVERT_AUTHOR_EMAIL, DEFAULT_REVERT_AUTHOR_NAME, GitSync};
use crate::api::rollout::{GitRevertState, GitRevertStatus, GitSyncRef, Rollout};

use super::git::{Author, CommitInfo, Git, GitAuth, GitError, GitRefSpec};
use super::render::ANNOTATION_SOURCE;

/// Field manager of the revert writer's status writes on Rollouts.
pub const FIELD_MANAGER: &str = "weir-gitsync";
/// How many times a push rejected because the remote moved is rebased and retried in one pass.
pub const MAX_PUSH_ATTEMPTS: usize = 5;
/// Commit message when `revert.messageTemplate` is unset.
pub const DEFAULT_MESSAGE_TEMPLATE: &str =
    "Revert {{rollout}} in {{namespace}}: release failed analysis\n\n{{reason}}\n\n{{commits}}";

/// What the revert writer does next for a Rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Find the commits, make the revert commit, record it.
    Plan {
        /// Pod-template hash of the failed release.
        pod_hash: String,
        /// Why the release failed, for the commit message.
        reason: String,
    },
    /// Push the recorded revert commit.
    Push {
        /// Pod-template hash of the failed release.
        pod_hash: String,
        /// The revert commit.
        commit: String,
    },
    /// The Rollout left the failed release while its revert commit was recorded but not yet as
    /// pushed: find out whether the commit is on the remote, and record which.
    Settle {
        /// Pod-template hash of the failed release.
        pod_hash: String,
        /// The revert commit.
        commit: String,
    },
}

/// Why a revert cannot be made safely; becomes `GitRevertBlocked` with this reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// One of the `GitRevertBlocked` reasons in [`reasons`].
    pub reason: &'static str,
    /// For people: what blocked it and what to do.
    pub message: String,
}

/// What the writer has to do for `ro`, if anything: only for a release that is aborted because its
/// analysis failed, or that a person aborted asking for the revert (`state: Requested`).
pub fn next_step(ro: &Rollout) -> Option<Step> {
    let status = ro.status.as_ref()?;
    if let Some(r) = &status.git_revert
        && r.state == GitRevertState::Pending
        && let Some(commit) = &r.revert_commit
        && status.current_pod_hash.as_deref() != Some(r.pod_hash.as_str())
    {
        // Most often the push landed and the sync applied the revert (which also ends the abort)
        // before the Pushed state was written: a crash or a conflict in between.
        return Some(Step::Settle {
            pod_hash: r.pod_hash.clone(),
            commit: commit.clone(),
        });
    }
    if !status.abort {
        // Retried (or never aborted): a revert now would undo what a person chose to try again.
        return None;
    }
    let pod_hash = status.current_pod_hash.clone()?;
    if status.stable_rs.as_deref() == Some(pod_hash.as_str()) {
        return None;
    }
    let progressing = conditions::find(&status.conditions, types::PROGRESSING);
    let why = progressing.map(|c| c.message.clone()).unwrap_or_default();
    match status
        .git_revert
        .as_ref()
        .filter(|r| r.pod_hash == pod_hash)
    {
        None => progressing
            .filter(|c| c.reason == reasons::ANALYSIS_RUN_FAILED)
            .map(|_| Step::Plan {
                pod_hash,
                reason: why,
            }),
        Some(r) => match (r.state, &r.revert_commit) {
            (GitRevertState::Requested, _) | (GitRevertState::Pending, None) => Some(Step::Plan {
                pod_hash,
                reason: if why.is_empty() {
                    "Aborted by a person, who asked for the Git revert".into()
                } else {
                    why
                },
            }),
            (GitRevertState::Pending, Some(commit)) => Some(Step::Push {
                pod_hash,
                commit: commit.clone(),
            }),
            (GitRevertState::Pushed | GitRevertState::Blocked | GitRevertState::Failed, _) => None,
        },
    }
}

/// The files that make up a Rollout, from the `weir.io/source` annotation the render wrote: its
/// file for plain YAML (`file#L12`), or the kustomization's directory for kustomize output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sources {
    /// One file.
    File(String),
    /// Every file below a directory ("" for the repository root).
    Directory(String),
}

impl Sources {
    /// The Rollout's sources; `None` when the Rollout carries no source annotation.
    pub fn of(ro: &Rollout) -> Option<Sources> {
        let source = ro.annotations().get(ANNOTATION_SOURCE)?;
        Some(match source.rsplit_once("#L") {
            Some((file, _)) => Sources::File(file.to_string()),
            None => Sources::Directory(
                source
                    .rsplit_once('/')
                    .map_or(String::new(), |(dir, _)| dir.to_string()),
            ),
        })
    }

    /// The pathspec `git log` is limited to.
    pub fn paths(&self) -> Vec<String> {
        match self {
            Sources::File(f) => vec![f.clone()],
            Sources::Directory(d) if d.is_empty() => Vec::new(),
            Sources::Directory(d) => vec![d.clone()],
        }
    }

    fn contains(&self, path: &str) -> bool {
        match self {
            Sources::File(f) => f == path,
            Sources::Directory(d) => d.is_empty() || path.starts_with(&format!("{d}/")),
        }
    }
}

/// The end of the range of commits to revert: the commit the sync applied the failing template at
/// (the Rollout's `weir.io/template-commit`), else the GitSync's last applied revision. The
/// annotation wins because a sync that failed partway applies some objects of a revision without
/// moving `lastAppliedRevision`: a release can run, and fail, on a revision that is not "applied"
/// yet, and the range up to the last applied one would hold none of its commits.
pub fn declared_at(ro: &Rollout, last_applied: Option<&str>) -> String {
    ro.annotations()
        .get(crate::api::TEMPLATE_COMMIT_ANNOTATION)
        .map(String::as_str)
        .or(last_applied)
        .unwrap_or_default()
        .to_string()
}

/// The commits to revert (newest first): all of `commits`, unless one of them also changed a file
/// outside the Rollout's sources, in which case a revert would undo someone else's change.
pub fn select(commits: &[CommitInfo], sources: &Sources) -> Result<Vec<String>, Blocked> {
    if commits.is_empty() {
        return Err(Blocked {
            reason: reasons::NO_COMMITS_TO_REVERT,
            message: "no commit since the stable revision changed the Rollout's sources".into(),
        });
    }
    for c in commits {
        let others: Vec<&str> = c
            .files
            .iter()
            .map(String::as_str)
            .filter(|f| !sources.contains(f))
            .collect();
        if !others.is_empty() {
            return Err(Blocked {
                reason: reasons::COMMIT_TOUCHES_OTHER_FILES,
                message: format!(
                    "commit {} ({}) also changed {}; weir does not revert changes outside the Rollout's own sources. Traffic stays on stable: revert by hand, then `kubectl weir retry`",
                    short(&c.sha),
                    c.subject,
                    others.join(", ")
                ),
            });
        }
    }
    Ok(commits.iter().map(|c| c.sha.clone()).collect())
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// The revert commit's message from `template` (placeholders `{{rollout}}`, `{{namespace}}`,
/// `{{reason}}`, `{{commits}}`). `{{commits}}` lists each reverted commit in git's own words
/// ("This reverts commit <sha>."), so tools and people can find the bad commit from the revert.
pub fn message(
    template: Option<&str>,
    rollout: &str,
    namespace: &str,
    reason: &str,
    commits: &[CommitInfo],
) -> String {
    let listed: Vec<String> = commits
        .iter()
        .map(|c| format!("This reverts commit {} ({}).", c.sha, c.subject))
        .collect();
    template
        .filter(|t| !t.trim().is_empty())
        .unwrap_or(DEFAULT_MESSAGE_TEMPLATE)
        .replace("{{rollout}}", rollout)
        .replace("{{namespace}}", namespace)
        .replace("{{reason}}", reason)
        .replace("{{commits}}", &listed.join("\n"))
}

/// What happened when a step ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The revert is on the remote (or the remote already had it): sync now.
    Pushed,
    /// Recorded as blocked; nothing was pushed.
    Blocked,
    /// Nothing to do (the Rollout moved on).
    Idle,
}

/// Why a revert step failed for now; the step is retried.
#[derive(Debug, thiserror::Error)]
pub enum RevertError {
    /// A Git operation failed for a reason that may pass (network, auth, a remote that keeps moving).
    #[error("Git: {0}")]
    Git(#[source] GitError),
    /// Reading or writing the Rollout failed.
    #[error("{action}")]
    Api {
        /// What was being done.
        action: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// The commits the Rollout's revert record says it reverts.
fn reverted_commits(ro: &Rollout) -> Vec<String> {
    ro.status
        .as_ref()
        .and_then(|s| s.git_revert.as_ref())
        .map(|r| r.reverted_commits.clone())
        .unwrap_or_default()
}

/// Which Rollout state a revert record may be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    /// The Rollout is still on the failed release.
    Current,
    /// The Rollout has left it, and the record of it is still there.
    Left,
}

/// Carries out revert steps for the Rollouts of one GitSync.
pub struct RevertWriter<'a> {
    /// The API client.
    pub client: &'a Client,
    /// The Git layer, with the GitSync's mirror.
    pub git: &'a dyn Git,
    /// The mirror key of the GitSync.
    pub key: &'a str,
    /// Credentials for the remote.
    pub auth: &'a GitAuth,
    /// The clock.
    pub now: Timestamp,
}

impl RevertWriter<'_> {
    /// Runs `step` for `ro`, which `gs` applied.
    pub async fn run(
        &self,
        gs: &GitSync,
        ro: &Rollout,
        step: Step,
    ) -> Result<Outcome, RevertError> {
        match step {
            Step::Plan { pod_hash, reason } => self.plan(gs, ro, &pod_hash, &reason).await,
            Step::Push { pod_hash, commit } => {
                self.push(gs, ro, &pod_hash, &commit, &reverted_commits(ro))
                    .await
            }
            Step::Settle { pod_hash, commit } => self.settle(gs, ro, &pod_hash, &commit).await,
        }
    }

    /// Records whether the revert of a release the Rollout has left is on the remote. It never
    /// pushes: the Rollout moved on, so a revert not pushed by now is no longer wanted.
    async fn settle(
        &self,
        gs: &GitSync,
        ro: &Rollout,
        pod_hash: &str,
        commit: &str,
    ) -> Result<Outcome, RevertError> {
        let Some(branch) = gs.spec.revert_push_branch().map(str::to_string) else {
            return Ok(Outcome::Idle);
        };
        let tip = self
            .branch_tip(gs, &branch)
            .await
            .map_err(RevertError::Git)?;
        let landed = self
            .git
            .contains(self.key, &tip, commit)
            .await
            .map_err(RevertError::Git)?;
        if landed {
            let reverted = reverted_commits(ro);
            return self
                .pushed(ro, pod_hash, commit, &branch, &reverted, Release::Left)
                .await;
        }
        let text = format!(
            "the Rollout left this release before revert {} reached branch {branch}; it was not pushed",
            short(commit)
        );
        self.write_record(ro, pod_hash, Release::Left, |r| {
            r.state = GitRevertState::Failed;
            r.message = Some(text.clone());
        })
        .await?;
        Ok(Outcome::Idle)
    }

    fn author(gs: &GitSync) -> Author {
        gs.spec
            .revert
            .as_ref()
            .and_then(|r| r.author.as_ref())
            .map(Author::from)
            .unwrap_or_else(|| Author {
                name: DEFAULT_REVERT_AUTHOR_NAME.into(),
                email: DEFAULT_REVERT_AUTHOR_EMAIL.into(),
            })
    }

    /// The tip of the branch the revert goes to, fetched now; the synced branch's tip when the push
    /// branch does not exist yet.
    async fn branch_tip(&self, gs: &GitSync, branch: &str) -> Result<String, GitError> {
        let spec = GitRefSpec::Branch(branch.to_string());
        match self
            .git
            .fetch(self.key, &gs.spec.url, &spec, self.auth)
            .await
        {
            Err(GitError::NotFound { .. }) => {
                let synced = GitRefSpec::from_spec(gs.spec.git_ref.as_ref());
                self.git
                    .fetch(self.key, &gs.spec.url, &synced, self.auth)
                    .await
            }
            other => other,
        }
    }

    async fn plan(
        &self,
        gs: &GitSync,
        ro: &Rollout,
        pod_hash: &str,
        reason: &str,
    ) -> Result<Outcome, RevertError> {
        let blocked = |b: Blocked| async move { self.block(gs, ro, pod_hash, b).await };
        let Some(branch) = gs.spec.revert_push_branch().map(str::to_string) else {
            return blocked(Blocked {
                reason: reasons::NO_PUSH_BRANCH,
                message: "the GitSync syncs a tag or commit and names no revert.pushBranch".into(),
            })
            .await;
        };
        let Some(sources) = Sources::of(ro) else {
            return blocked(Blocked {
                reason: reasons::NO_COMMITS_TO_REVERT,
                message: format!("the Rollout has no {ANNOTATION_SOURCE} annotation"),
            })
            .await;
        };
        let status = ro.status.clone().unwrap_or_default();
        let Some(from) = status.stable_commit.clone() else {
            return blocked(Blocked {
                reason: reasons::NO_COMMITS_TO_REVERT,
                message: "the commit that declared the stable revision is unknown (it became stable before weir recorded it)".into(),
            })
            .await;
        };
        let last_applied = gs
            .status
            .as_ref()
            .and_then(|s| s.last_applied_revision.as_deref());
        let to = declared_at(ro, last_applied);
        // When the mirror's branch is exactly what was last applied (the usual case: the sync
        // fetched it), build on it without asking the remote: if the remote has moved since, the
        // push is refused as non-fast-forward and the loop in `push` fetches and rebases. A push
        // branch other than the synced one, or a mirror that moved on, is fetched first.
        let synced = matches!(
            GitRefSpec::from_spec(gs.spec.git_ref.as_ref()),
            GitRefSpec::Branch(ref b) if *b == branch
        );
        let local = if synced {
            self.git.fetched_tip(self.key, &branch).await.ok().flatten()
        } else {
            None
        };
        let tip = match local.filter(|t| Some(t.as_str()) == last_applied) {
            Some(tip) => tip,
            None => self
                .branch_tip(gs, &branch)
                .await
                .map_err(RevertError::Git)?,
        };
        let commits = self
            .git
            .commits_touching(self.key, &from, &to, &sources.paths())
            .await
            .map_err(RevertError::Git)?;
        let shas = match select(&commits, &sources) {
            Ok(shas) => shas,
            Err(b) => return blocked(b).await,
        };
        let policy = gs.spec.revert.clone().unwrap_or_default();
        let text = message(
            policy.message_template.as_deref(),
            &ro.name_any(),
            &ro.namespace().unwrap_or_default(),
            reason,
            &commits,
        );
        let commit = match self
            .git
            .revert(self.key, &tip, &shas, &Self::author(gs), &text)
            .await
        {
            Ok(c) => c,
            Err(GitError::Conflict { commit, files, .. }) => {
                return blocked(Blocked {
                    reason: reasons::REVERT_CONFLICT,
                    message: format!(
                        "reverting {} conflicts with later changes in {}; revert by hand",
                        short(&commit),
                        files.join(", ")
                    ),
                })
                .await;
            }
            Err(GitError::NothingToCommit { .. }) => {
                return self
                    .write(ro, pod_hash, |r| {
                        r.reverted_commits = shas.clone();
                        r.state = GitRevertState::Pushed;
                        r.message = Some(format!("branch {branch} already reverts these commits"));
                    })
                    .await
                    .map(|_| Outcome::Pushed);
            }
            Err(e) => return Err(RevertError::Git(e)),
        };
        // Recorded before the push: from here on, a restart pushes this commit, never a new one.
        let gs_ref = GitSyncRef {
            name: gs.name_any(),
            namespace: gs.namespace().unwrap_or_default(),
        };
        if !self
            .write(ro, pod_hash, |r| {
                r.git_sync = Some(gs_ref.clone());
                r.reverted_commits = shas.clone();
                r.revert_commit = Some(commit.clone());
                r.state = GitRevertState::Pending;
                r.message = None;
            })
            .await?
        {
            return Ok(Outcome::Idle);
        }
        self.push(gs, ro, pod_hash, &commit, &shas).await
    }

    async fn push(
        &self,
        gs: &GitSync,
        ro: &Rollout,
        pod_hash: &str,
        commit: &str,
        reverted: &[String],
    ) -> Result<Outcome, RevertError> {
        let Some(branch) = gs.spec.revert_push_branch().map(str::to_string) else {
            return Ok(Outcome::Idle);
        };
        let author = Self::author(gs);
        let mut commit = commit.to_string();
        for _ in 0..MAX_PUSH_ATTEMPTS {
            match self
                .git
                .push(self.key, &gs.spec.url, &commit, &branch, self.auth)
                .await
            {
                Ok(()) => {
                    return self
                        .pushed(ro, pod_hash, &commit, &branch, reverted, Release::Current)
                        .await;
                }
                Err(GitError::NonFastForward { .. }) => {}
                // The mirror lost the commit (a new cache): plan again on the remote's tip; if the
                // revert already landed, that finds nothing left to revert.
                Err(GitError::NotFound { .. }) => {
                    self.write(ro, pod_hash, |r| {
                        r.revert_commit = None;
                    })
                    .await?;
                    return Ok(Outcome::Idle);
                }
                Err(e) => {
                    let text = e.to_string();
                    self.write(ro, pod_hash, |r| r.message = Some(text.clone()))
                        .await?;
                    let why = format!("pushing the revert failed, retrying: {text}");
                    self.set_condition(ro, conditions::git_revert_push_failed(why, self.now, None))
                        .await?;
                    return Err(RevertError::Git(e));
                }
            }
            // Someone pushed in between: put the revert on top of their work and try again.
            let tip = self
                .branch_tip(gs, &branch)
                .await
                .map_err(RevertError::Git)?;
            commit = match self.git.rebase(self.key, &commit, &tip, &author).await {
                Ok(c) => c,
                Err(GitError::NothingToCommit { .. }) => {
                    // The branch already holds the revert: ours landed before a restart, or a
                    // person reverted by hand.
                    return self
                        .pushed(ro, pod_hash, &commit, &branch, reverted, Release::Current)
                        .await;
                }
                Err(GitError::Conflict { files, .. }) => {
                    return self
                        .block(
                            gs,
                            ro,
                            pod_hash,
                            Blocked {
                                reason: reasons::REVERT_CONFLICT,
                                message: format!(
                                    "the revert conflicts with commits pushed since in {}; revert by hand",
                                    files.join(", ")
                                ),
                            },
                        )
                        .await;
                }
                Err(e) => return Err(RevertError::Git(e)),
            };
            let rebased = commit.clone();
            if !self
                .write(ro, pod_hash, |r| r.revert_commit = Some(rebased.clone()))
                .await?
            {
                return Ok(Outcome::Idle);
            }
        }
        let text = format!(
            "branch {branch} moved on every one of {MAX_PUSH_ATTEMPTS} pushes; trying again later"
        );
        self.write(ro, pod_hash, |r| r.message = Some(text.clone()))
            .await?;
        Err(RevertError::Git(GitError::PushRejected {
            branch,
            reason: text,
        }))
    }

    async fn pushed(
        &self,
        ro: &Rollout,
        pod_hash: &str,
        commit: &str,
        branch: &str,
        reverted: &[String],
        release: Release,
    ) -> Result<Outcome, RevertError> {
        let listed = reverted
            .iter()
            .map(|c| short(c).to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!(
            "Reverted {listed} with commit {} on branch {branch}",
            short(commit)
        );
        // The Event and the condition go before the Pushed state, because Pushed ends the
        // writer's work on this release: a crash or a failed request after it would lose them for
        // good. Before it, a retry finds the push on the remote and comes back here, and the
        // Event's name is fixed per release, so recording it again is a no-op.
        self.event(ro, pod_hash, "GitReverted", &text, false)
            .await?;
        self.set_condition(ro, conditions::git_reverted(text.clone(), self.now, None))
            .await?;
        self.write_record(ro, pod_hash, release, |r| {
            r.revert_commit = Some(commit.to_string());
            r.state = GitRevertState::Pushed;
            r.message = None;
        })
        .await?;
        Ok(Outcome::Pushed)
    }

    async fn block(
        &self,
        _gs: &GitSync,
        ro: &Rollout,
        pod_hash: &str,
        blocked: Blocked,
    ) -> Result<Outcome, RevertError> {
        let text = blocked.message.clone();
        if self
            .write(ro, pod_hash, |r| {
                r.state = GitRevertState::Blocked;
                r.message = Some(text.clone());
            })
            .await?
        {
            let c =
                conditions::git_revert_blocked(blocked.reason, &blocked.message, self.now, None);
            self.set_condition(ro, c).await?;
            self.event(ro, pod_hash, "GitRevertBlocked", &blocked.message, true)
                .await?;
        }
        Ok(Outcome::Blocked)
    }

    /// Updates `status.gitRevert` of the live Rollout, if it is still on the failed release
    /// `pod_hash`. Returns whether it wrote.
    async fn write(
        &self,
        ro: &Rollout,
        pod_hash: &str,
        change: impl Fn(&mut GitRevertStatus),
    ) -> Result<bool, RevertError> {
        self.write_record(ro, pod_hash, Release::Current, change)
            .await
    }

    /// [`Self::write`], or with [`Release::Left`] a change to the existing record of a release
    /// the Rollout has left (never a new record, which could replace a newer release's).
    async fn write_record(
        &self,
        ro: &Rollout,
        pod_hash: &str,
        release: Release,
        change: impl Fn(&mut GitRevertStatus),
    ) -> Result<bool, RevertError> {
        self.update_status(ro, |status| {
            let on_release = match release {
                Release::Current => status.current_pod_hash.as_deref() == Some(pod_hash),
                Release::Left => status
                    .git_revert
                    .as_ref()
                    .is_some_and(|r| r.pod_hash == pod_hash),
            };
            if !on_release {
                return false;
            }
            let entry = status
                .git_revert
                .take()
                .filter(|r| r.pod_hash == pod_hash)
                .unwrap_or(GitRevertStatus {
                    pod_hash: pod_hash.to_string(),
                    git_sync: None,
                    reverted_commits: Vec::new(),
                    revert_commit: None,
                    state: GitRevertState::Pending,
                    message: None,
                });
            let mut next = entry.clone();
            change(&mut next);
            status.git_revert = Some(next);
            true
        })
        .await
    }

    async fn set_condition(
        &self,
        ro: &Rollout,
        condition: k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition,
    ) -> Result<bool, RevertError> {
        self.update_status(ro, |status| {
            conditions::set(&mut status.conditions, condition.clone());
            true
        })
        .await
    }

    /// Read-modify-write of the Rollout's status, guarded by resourceVersion so that the Rollout
    /// controller's concurrent writes are never lost (a conflict is an error, retried).
    async fn update_status(
        &self,
        ro: &Rollout,
        change: impl Fn(&mut crate::api::rollout::RolloutStatus) -> bool,
    ) -> Result<bool, RevertError> {
        let ns = ro.namespace().unwrap_or_default();
        let name = ro.name_any();
        let api: Api<Rollout> = Api::namespaced(self.client.clone(), &ns);
        let err = |action: &str| {
            let action = format!("{action} Rollout {ns}/{name}");
            move |source| RevertError::Api { action, source }
        };
        let Some(mut fresh) = api.get_opt(&name).await.map_err(err("reading"))? else {
            return Ok(false);
        };
        let mut status = fresh.status.clone().unwrap_or_default();
        if !change(&mut status) {
            return Ok(false);
        }
        if fresh.status.as_ref() == Some(&status) {
            return Ok(true);
        }
        fresh.status = Some(status);
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        api.replace_status(&name, &pp, &fresh)
            .await
            .map_err(err("writing the revert state of"))?;
        Ok(true)
    }

    async fn event(
        &self,
        ro: &Rollout,
        pod_hash: &str,
        reason: &str,
        message: &str,
        warning: bool,
    ) -> Result<(), RevertError> {
        let uid = ro.uid().unwrap_or_default();
        let name = format!(
            "{}.{}.{}-{pod_hash}",
            ro.name_any().chars().take(200).collect::<String>(),
            uid.chars().take(8).collect::<String>(),
            reason.to_ascii_lowercase()
        );
        let involved = ObjectReference {
            api_version: Some(Rollout::api_version(&()).into_owned()),
            kind: Some("Rollout".into()),
            name: Some(ro.name_any()),
            namespace: ro.namespace(),
            uid: Some(uid),
            ..Default::default()
        };
        let event = crate::events::NewEvent {
            name,
            reason,
            message,
            warning,
        };
        super::controller::record_event(self.client, involved, event, self.now)
            .await
            .map_err(|source| RevertError::Api {
                action: format!("recording {reason} on Rollout {}", ro.name_any()),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::ConditionStatus;
    use crate::api::rollout::RolloutStatus;

    fn commit(sha: &str, files: &[&str]) -> CommitInfo {
        CommitInfo {
            sha: sha.into(),
            subject: format!("change {sha}"),
            files: files.iter().map(|f| f.to_string()).collect(),
        }
    }

    fn rollout(status: RolloutStatus) -> Rollout {
        let mut ro: Rollout = serde_json::from_value(serde_json::json!({
            "apiVersion": "weir.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "apps", "annotations": {ANNOTATION_SOURCE: "apps/web/rollout.yaml#L1"}},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "web:2"}]}},
                     "strategy": {"canary": {"steps": [{"setWeight": 20}]}}}
        }))
        .unwrap();
        ro.status = Some(status);
        ro
    }

    fn aborted(reason: &str) -> RolloutStatus {
        let mut s = RolloutStatus {
            abort: true,
            current_pod_hash: Some("bad".into()),
            stable_rs: Some("good".into()),
            ..Default::default()
        };
        s.conditions.push(conditions::new(
            types::PROGRESSING,
            ConditionStatus::False,
            reason,
            "Rollout aborted: metric error-rate failed",
            Timestamp::UNIX_EPOCH,
            None,
        ));
        s
    }

    #[test]
    fn the_range_ends_where_the_failing_template_was_applied() {
        let mut ro = rollout(aborted(reasons::ANALYSIS_RUN_FAILED));
        // No annotation (applied before weir recorded it): the last applied revision.
        assert_eq!(declared_at(&ro, Some("applied")), "applied");
        assert_eq!(declared_at(&ro, None), "");
        // A sync that failed after applying this Rollout left lastAppliedRevision behind.
        ro.metadata.annotations.get_or_insert_default().insert(
            crate::api::TEMPLATE_COMMIT_ANNOTATION.into(),
            "declared".into(),
        );
        assert_eq!(declared_at(&ro, Some("older")), "declared");
        assert_eq!(declared_at(&ro, None), "declared");
    }

    fn with_revert(
        mut s: RolloutStatus,
        state: GitRevertState,
        commit: Option<&str>,
    ) -> RolloutStatus {
        s.git_revert = Some(GitRevertStatus {
            pod_hash: "bad".into(),
            git_sync: None,
            reverted_commits: vec!["b1".into()],
            revert_commit: commit.map(str::to_string),
            state,
            message: None,
        });
        s
    }

    #[test]
    fn only_failed_analyses_and_explicit_requests_are_reverted_and_never_twice() {
        let plan = Some(Step::Plan {
            pod_hash: "bad".into(),
            reason: "Rollout aborted: metric error-rate failed".into(),
        });
        let human = aborted(reasons::ROLLOUT_ABORTED);
        let cases: Vec<(&str, RolloutStatus, Option<Step>)> = vec![
            (
                "analysis failed",
                aborted(reasons::ANALYSIS_RUN_FAILED),
                plan.clone(),
            ),
            ("aborted by a person", human.clone(), None),
            (
                "a person asked for the revert",
                with_revert(human.clone(), GitRevertState::Requested, None),
                Some(Step::Plan {
                    pod_hash: "bad".into(),
                    reason: "Rollout aborted: metric error-rate failed".into(),
                }),
            ),
            (
                "recorded, not pushed",
                with_revert(
                    aborted(reasons::ANALYSIS_RUN_FAILED),
                    GitRevertState::Pending,
                    Some("r1"),
                ),
                Some(Step::Push {
                    pod_hash: "bad".into(),
                    commit: "r1".into(),
                }),
            ),
            (
                "already pushed",
                with_revert(
                    aborted(reasons::ANALYSIS_RUN_FAILED),
                    GitRevertState::Pushed,
                    Some("r1"),
                ),
                None,
            ),
            (
                "blocked",
                with_revert(
                    aborted(reasons::ANALYSIS_RUN_FAILED),
                    GitRevertState::Blocked,
                    None,
                ),
                None,
            ),
            (
                "retried by a person",
                RolloutStatus {
                    abort: false,
                    ..aborted(reasons::ANALYSIS_RUN_FAILED)
                },
                None,
            ),
            (
                "a revert of an older release",
                {
                    let mut s = with_revert(
                        aborted(reasons::ANALYSIS_RUN_FAILED),
                        GitRevertState::Pushed,
                        Some("r0"),
                    );
                    s.git_revert.as_mut().unwrap().pod_hash = "older".into();
                    s
                },
                plan.clone(),
            ),
            (
                "back on stable",
                RolloutStatus {
                    current_pod_hash: Some("good".into()),
                    ..aborted(reasons::ANALYSIS_RUN_FAILED)
                },
                None,
            ),
            (
                "the revert synced before its Pushed state was written",
                {
                    let mut s = with_revert(
                        aborted(reasons::ANALYSIS_RUN_FAILED),
                        GitRevertState::Pending,
                        Some("r1"),
                    );
                    s.abort = false;
                    s.current_pod_hash = Some("good".into());
                    s
                },
                Some(Step::Settle {
                    pod_hash: "bad".into(),
                    commit: "r1".into(),
                }),
            ),
            (
                "retried by a person after the revert commit was made",
                RolloutStatus {
                    abort: false,
                    ..with_revert(
                        aborted(reasons::ANALYSIS_RUN_FAILED),
                        GitRevertState::Pending,
                        Some("r1"),
                    )
                },
                None,
            ),
            (
                "moved on to a new release before a revert commit was made",
                {
                    let mut s = with_revert(
                        aborted(reasons::ANALYSIS_RUN_FAILED),
                        GitRevertState::Pending,
                        None,
                    );
                    s.abort = false;
                    s.current_pod_hash = Some("next".into());
                    s
                },
                None,
            ),
        ];
        for (what, status, expected) in cases {
            assert_eq!(next_step(&rollout(status)), expected, "{what}");
        }
    }

    #[test]
    fn commits_that_touch_other_files_block_the_revert() {
        let sources = Sources::File("apps/web/rollout.yaml".into());
        assert_eq!(
            select(
                &[
                    commit("b2", &["apps/web/rollout.yaml"]),
                    commit("b1", &["apps/web/rollout.yaml"])
                ],
                &sources
            ),
            Ok(vec!["b2".to_string(), "b1".to_string()])
        );
        let blocked = select(
            &[commit(
                "b1",
                &["apps/web/rollout.yaml", "apps/shop/rollout.yaml"],
            )],
            &sources,
        )
        .unwrap_err();
        assert_eq!(blocked.reason, reasons::COMMIT_TOUCHES_OTHER_FILES);
        assert!(
            blocked.message.contains("apps/shop/rollout.yaml"),
            "{}",
            blocked.message
        );
        assert_eq!(
            select(&[], &sources).unwrap_err().reason,
            reasons::NO_COMMITS_TO_REVERT
        );
        let kustomized = Sources::Directory("apps/web".into());
        assert!(
            select(
                &[commit(
                    "b1",
                    &["apps/web/patch.yaml", "apps/web/kustomization.yaml"]
                )],
                &kustomized
            )
            .is_ok()
        );
        assert!(select(&[commit("b1", &["apps/webshop/x.yaml"])], &kustomized).is_err());
    }

    #[test]
    fn sources_come_from_the_render_annotation() {
        let ro = rollout(RolloutStatus::default());
        assert_eq!(
            Sources::of(&ro),
            Some(Sources::File("apps/web/rollout.yaml".into()))
        );
        let mut k = ro.clone();
        k.metadata.annotations = Some(
            [(
                ANNOTATION_SOURCE.to_string(),
                "apps/web/kustomization.yaml".to_string(),
            )]
            .into(),
        );
        assert_eq!(Sources::of(&k), Some(Sources::Directory("apps/web".into())));
    }

    #[test]
    fn the_message_names_rollout_reason_and_every_reverted_commit() {
        let text = message(
            None,
            "web",
            "apps",
            "metric error-rate: 0.12 broke result[0] < 0.05",
            &[commit("0123456789abcdef0123456789abcdef01234567", &["a"])],
        );
        assert!(text.starts_with("Revert web in apps"), "{text}");
        assert!(text.contains("error-rate"), "{text}");
        assert!(
            text.contains("This reverts commit 0123456789abcdef0123456789abcdef01234567"),
            "{text}"
        );
        let custom = message(
            Some("rollback {{rollout}}: {{reason}}"),
            "web",
            "apps",
            "why",
            &[],
        );
        assert_eq!(custom, "rollback web: why");
    }
}
