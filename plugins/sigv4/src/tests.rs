use super::*;

/// The example of the AWS reference ("Create a signed AWS API request"):
/// IAM ListUsers, signed by botocore-equivalent code at 20150830T123600Z.
#[test]
fn the_reference_example_verifies() {
    let headers = vec![
        (
            "Content-Type".to_owned(),
            "application/x-www-form-urlencoded; charset=utf-8".to_owned(),
        ),
        ("Host".to_owned(), "iam.amazonaws.com".to_owned()),
        ("X-Amz-Date".to_owned(), "20150830T123600Z".to_owned()),
        (
            "Authorization".to_owned(),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
                .to_owned(),
        ),
    ];
    let req = Request {
        method: "GET",
        host: "iam.amazonaws.com",
        path: "/",
        query: "Action=ListUsers&Version=2010-05-08",
        headers: &headers,
        body: b"",
    };
    let secret = |id: &str| {
        (id == "AKIDEXAMPLE").then(|| "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_owned())
    };
    let scope = verify(&req, secret).expect("the reference signature");
    assert_eq!(scope.service, "iam");
    assert_eq!(
        verify(&req, |_| Some("another".into())),
        Err(VerifyError::Mismatch)
    );
    assert!(matches!(
        verify(&req, |_| None),
        Err(VerifyError::UnknownKey(_))
    ));
}

#[test]
fn a_signed_request_verifies_and_a_changed_one_does_not() {
    let creds = Credentials {
        access_key_id: "AKID",
        secret_access_key: "s3cr3t",
    };
    let base = Request {
        method: "GET",
        host: "127.0.0.1:9000",
        path: "/snapshots/snap-1/blocks",
        query: "maxResults=10&startingBlockIndex=0",
        headers: &[],
        body: b"",
    };
    let mut headers = sign(&base, &creds, "us-west-2", "ebs", &amz_date(1_764_930_000));
    headers.push(("host".into(), base.host.into()));
    let signed = Request {
        headers: &headers,
        ..base
    };
    let secret = |_: &str| Some("s3cr3t".to_owned());
    let scope = verify(&signed, secret).expect("valid");
    assert_eq!(scope.region, "us-west-2");
    let tampered = Request {
        query: "maxResults=11&startingBlockIndex=0",
        ..signed
    };
    assert_eq!(verify(&tampered, secret), Err(VerifyError::Mismatch));
    // Query parameter order does not matter, encoding is canonical.
    let reordered = Request {
        query: "startingBlockIndex=0&maxResults=10",
        ..signed
    };
    assert!(verify(&reordered, secret).is_ok());
}

#[test]
fn dates_and_encoding() {
    assert_eq!(amz_date(1_440_938_160), "20150830T123600Z");
    assert_eq!(amz_date(0), "19700101T000000Z");
    assert_eq!(amz_date(951_782_400), "20000229T000000Z");
    assert_eq!(uri_encode("a b/c~", true), "a%20b/c~");
    assert_eq!(uri_encode("a/b", false), "a%2Fb");
    assert_eq!(uri_decode("a%20b+c%2f"), "a b c/");
    assert_eq!(uri_decode("100%"), "100%");
}
