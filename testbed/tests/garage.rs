//! Garage started for real: objects go in and come out through the S3 API
//! with the key the testbed created.
use futures::TryStreamExt as _;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};
use testbed::Garage;

async fn put(store: &impl ObjectStore, key: &str, body: &'static [u8]) {
    store
        .put(&Path::from(key), body.into())
        .await
        .unwrap_or_else(|e| panic!("PUT {key}: {e}"));
}

async fn get(store: &impl ObjectStore, key: &str) -> Vec<u8> {
    let got = store.get(&Path::from(key)).await;
    let got = got.unwrap_or_else(|e| panic!("GET {key}: {e}"));
    got.bytes().await.expect("GET body").to_vec()
}

#[tokio::test]
async fn single_node_stores_lists_and_serves_objects() {
    let garage = Garage::single();
    let store = garage.store(0, garage.bucket());
    put(&store, "blobs/sha256/ab/abcd", b"hello garage").await;
    assert_eq!(get(&store, "blobs/sha256/ab/abcd").await, b"hello garage");
    assert_eq!(
        garage.list_keys(garage.bucket()).await,
        ["blobs/sha256/ab/abcd"]
    );

    // The advertised environment alone is enough for a client.
    let mut from_env = AmazonS3Builder::new().with_bucket_name(garage.bucket());
    for (name, value) in garage.env() {
        let key: AmazonS3ConfigKey = name.to_ascii_lowercase().parse().expect(name);
        from_env = from_env.with_config(key, value);
    }
    let from_env = from_env.build().expect("client from env");
    assert_eq!(
        get(&from_env, "blobs/sha256/ab/abcd").await,
        b"hello garage"
    );

    garage.create_bucket("second-bucket");
    put(&garage.store(0, "second-bucket"), "other", b"x").await;
    assert_eq!(garage.list_keys("second-bucket").await, ["other"]);
    assert_eq!(garage.list_keys(garage.bucket()).await.len(), 1);
}

#[tokio::test]
async fn multipart_uploads_in_progress_are_listed() {
    let garage = Garage::single();
    let store = garage.store(0, garage.bucket());
    assert!(
        garage
            .list_multipart_uploads(garage.bucket())
            .await
            .is_empty()
    );
    let mut upload = store
        .put_multipart(&Path::from("uploads/big"))
        .await
        .expect("create multipart upload");
    upload.put_part(vec![7u8; 1024].into()).await.expect("part");
    let listed = garage.list_multipart_uploads(garage.bucket()).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].key, "uploads/big");
    assert!(!listed[0].upload_id.is_empty());
    upload.abort().await.expect("abort");
    assert!(
        garage
            .list_multipart_uploads(garage.bucket())
            .await
            .is_empty()
    );
    assert!(garage.list_keys(garage.bucket()).await.is_empty());
}

/// Pins the Garage 2.5.0 bug documented in the crate docs: a `start-after`
/// that sorts before the prefix, with a key outside the prefix between the
/// two, hides every key under the prefix. When this fails, Garage has fixed
/// it and the workaround can go.
#[tokio::test]
async fn garage_start_after_before_the_prefix_lists_nothing() {
    let garage = Garage::single();
    let store = garage.store(0, garage.bucket());
    let prefix = Path::from("blobs");
    let list = |offset: &'static str| {
        store
            .list_with_offset(Some(&prefix), &Path::from(offset))
            .map_ok(|m| m.location.to_string())
            .try_collect::<Vec<_>>()
    };
    put(&store, "blobs/one", b"1").await;
    put(&store, "blobs/two", b"2").await;
    assert_eq!(
        list("a").await.unwrap(),
        ["blobs/one", "blobs/two"],
        "nothing between"
    );
    put(&store, "attic", b"3").await;
    assert_eq!(
        list("blobs/one").await.unwrap(),
        ["blobs/two"],
        "offset inside the prefix"
    );
    assert_eq!(
        list("a").await.unwrap(),
        Vec::<String>::new(),
        "the bug is gone?"
    );
}

#[tokio::test]
async fn three_nodes_keep_serving_with_one_killed() {
    let mut garage = Garage::cluster(3);
    assert_eq!(garage.node_count(), 3);
    let bucket = garage.bucket().to_owned();
    put(&garage.store(0, &bucket), "before", b"written by three").await;

    garage.kill(1);
    for node in [0, 2] {
        assert_eq!(
            get(&garage.store(node, &bucket), "before").await,
            b"written by three"
        );
    }
    put(&garage.store(2, &bucket), "during", b"written by two").await;
    assert_eq!(
        get(&garage.store(0, &bucket), "during").await,
        b"written by two"
    );
    assert_eq!(garage.list_keys(&bucket).await, ["before", "during"]);

    garage.restart(1);
    assert_eq!(
        get(&garage.store(1, &bucket), "during").await,
        b"written by two"
    );
}
