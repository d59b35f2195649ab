//! A logical dump taken on one major version restores into another (what physical backups
//! cannot do): PostgreSQL 15 to 17, whatever the major under test. Alone in its test binary,
//! because it switches the server under test (`use_pg_bindir`) between clusters.

use sc_backup_core::pg::server_binaries::ServerBinaries;
use sc_backup_pg_test::{table_content, use_pg_bindir, Cluster, ClusterOptions, TestDir};

use sc_backup_pg_test::output_text as text;

fn contents(client: &mut sc_backup_pg_test::postgres::Client) -> Vec<(i64, String)> {
    ["missions", "users"]
        .iter()
        .map(|table| table_content(client, table))
        .collect()
}

#[test]
fn a_dump_taken_on_15_restores_into_17() {
    let dir = TestDir::new("dump_across_majors");
    let repository = dir.subdir("repo");
    let old = ServerBinaries::find(15, None).unwrap_or_else(|e| panic!("{e}"));
    let new = ServerBinaries::find(17, None).unwrap_or_else(|e| panic!("{e}"));

    use_pg_bindir(old.bindir());
    let mut source = Cluster::init(&dir, "pg15", ClusterOptions::default());
    source.start();
    let mut client = source.connect();
    client
        .batch_execute(
            "CREATE TYPE status AS ENUM ('planned', 'done');
             CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL);
             CREATE TABLE missions (id bigserial PRIMARY KEY, user_id int REFERENCES users,
                                    state status NOT NULL DEFAULT 'planned', payload jsonb);
             INSERT INTO users SELECT g, 'user ' || g FROM generate_series(1, 200) g;
             INSERT INTO missions (user_id, payload)
                 SELECT g % 200 + 1, jsonb_build_object('n', g) FROM generate_series(1, 20000) g;",
        )
        .unwrap();
    let before = contents(&mut client);
    let dumped = source
        .cli(&dir.path, &repository)
        .args(["dump", "--database", "postgres", "--no-globals"])
        .output()
        .unwrap();
    assert!(dumped.status.success(), "{}", text(&dumped));
    assert!(
        text(&dumped).contains("postgres_full_"),
        "{}",
        text(&dumped)
    );
    drop(client);
    source.stop("fast");

    use_pg_bindir(new.bindir());
    let mut target = Cluster::init(&dir, "pg17", ClusterOptions::default());
    target.start();
    let restored = target
        .cli(&dir.path, &repository)
        .args(["restore-dump", "latest", "--database", "from_15"])
        .output()
        .unwrap();
    assert!(restored.status.success(), "{}", text(&restored));
    assert!(
        text(&restored).contains("public.missions: 20000 rows"),
        "{}",
        text(&restored)
    );
    let mut client = sc_backup_pg_test::postgres::Config::new()
        .host_path(&target.socket_dir)
        .user("postgres")
        .dbname("from_15")
        .connect(sc_backup_pg_test::postgres::NoTls)
        .unwrap();
    let version: String = client
        .query_one("SELECT current_setting('server_version_num')", &[])
        .unwrap()
        .get(0);
    assert!(version.starts_with("17"), "{version}");
    assert_eq!(contents(&mut client), before);
}
