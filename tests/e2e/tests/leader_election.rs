//! Two controllers with --leader-elect: exactly one writes; after `kill -9` of the leader the
//! other takes over and issues within lease duration + 5 s (measured and printed).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use command_issuer_e2e::fixtures::{install_example_issuer, wait_cr_reason};
use command_issuer_e2e::{
    approve, create_certificate_request, make_csr, ready_condition, wait_for, ControlPlane,
    Controller, Sim,
};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;

const LEASE: &str = "b68cef20.keyfactor.com";
const LEASE_DURATION: Duration = Duration::from_secs(15);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

async fn holder(client: &kube::Client) -> Option<String> {
    let l = Api::<Lease>::namespaced(client.clone(), "command-issuer-system")
        .get_opt(LEASE)
        .await
        .ok()??;
    l.spec?.holder_identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_writes_and_a_standby_takes_over_after_kill_9() -> Result<()> {
    let crds = repo().join("crds");
    let cp = ControlPlane::start_with_crds(&[crds.as_path()]).await?;
    let client = cp.client();
    let sim = Sim::start_default().await?;
    install_example_issuer(&cp, &sim).await?;

    let args = [
        "--cluster-resource-namespace=command-issuer-system",
        "--leader-elect",
    ];
    let mut a = Controller::start(cp.admin_kubeconfig(), &args)?;
    let first = wait_for(Duration::from_secs(20), "a lease holder", || {
        holder(&client)
    })
    .await?;
    let mut b = Controller::start(cp.admin_kubeconfig(), &args)?;
    b.wait_for_log("leader election started", Duration::from_secs(20))
        .await?;

    let (pem, der) = make_csr("le-1.example.com", &["le-1.example.com"])?;
    create_certificate_request(
        &client,
        "default",
        "le-1",
        &pem,
        "Issuer",
        "issuer-sample",
        &[],
    )
    .await?;
    approve(&client, "default", "le-1").await?;
    wait_cr_reason(
        &client,
        "default",
        "le-1",
        "Issued",
        Duration::from_secs(10),
    )
    .await?;
    ensure!(
        sim.enrollment_count(&der).await? == 1,
        "exactly one enrollment with two controllers"
    );
    let leaders = [&a, &b]
        .iter()
        .filter(|c| c.logs().contains("became leader"))
        .count();
    ensure!(
        leaders == 1,
        "exactly one controller became leader, saw {leaders}"
    );
    let (leader, standby) = if a.logs().contains("became leader") {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    ensure!(
        !standby.logs().contains("status patched"),
        "the standby wrote a status"
    );
    ensure!(
        leader.logs().contains("status patched"),
        "the leader wrote the status"
    );
    println!("leader: {first}");

    leader.kill();
    let killed_at = Instant::now();
    let (pem2, der2) = make_csr("le-2.example.com", &["le-2.example.com"])?;
    create_certificate_request(
        &client,
        "default",
        "le-2",
        &pem2,
        "Issuer",
        "issuer-sample",
        &[],
    )
    .await?;
    approve(&client, "default", "le-2").await?;
    wait_for(
        LEASE_DURATION + Duration::from_secs(5),
        "le-2 Issued by the standby",
        || async {
            ready_condition(&client, "default", "le-2")
                .await
                .ok()
                .flatten()
                .filter(|c| c.reason == "Issued")
        },
    )
    .await
    .context("failover within lease duration + 5 s")?;
    let took = killed_at.elapsed();
    println!(
        "failover: kill -9 of the leader → next request Issued in {:.2}s (bound {}s)",
        took.as_secs_f64(),
        (LEASE_DURATION + Duration::from_secs(5)).as_secs()
    );
    ensure!(
        standby.logs().contains("became leader"),
        "the standby took the lease"
    );
    ensure!(
        sim.enrollment_count(&der2).await? == 1 && sim.enrollment_count(&der).await? == 1,
        "no double enrollment after failover"
    );
    let new_holder = holder(&client).await.context("lease holder")?;
    ensure!(
        new_holder != first,
        "lease moved from {first} to another identity"
    );
    Ok(())
}
