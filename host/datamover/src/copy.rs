//! The copy engine: which blocks to move, moving them with bounded
//! parallelism, recording progress in a checkpoint, and verifying the
//! target block by block before reporting success.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt, stream};

use crate::block::Block;
use crate::checkpoint::Checkpoint;
use crate::digest::{disk_digest, zero_block_digest};
use crate::endpoint::Endpoint;

/// Which blocks a copy moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Every block.
    Full,
    /// Blocks whose digests differ between source and target. An endpoint
    /// that lists no block digests has its blocks hashed by the mover: a
    /// target's read (not written) before the copy, a source's as each
    /// block is read for it (a block equal to the target's is not written).
    /// An initial sync of a sparse disk onto an empty volume writes only
    /// its data; the report's mode says which side was hashed. Blocks in
    /// the zero extents such an endpoint lists (imageio's `extents`) are
    /// not read at all.
    Digests,
    /// Blocks overlapping these byte ranges `(offset, length)`, as a
    /// platform's changed-block listing returns them.
    Changed(Vec<(u64, u64)>),
}

#[derive(Debug, Clone)]
pub struct CopyOptions {
    pub block_size: u64,
    /// Blocks in flight at once; memory use is about `workers × block_size`.
    pub workers: usize,
    pub mode: Mode,
}

impl Default for CopyOptions {
    fn default() -> Self {
        Self {
            block_size: 4 << 20,
            workers: 4,
            mode: Mode::Digests,
        }
    }
}

/// What a copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// The mode actually used, with the reason for any fallback.
    pub mode: String,
    pub blocks_total: u64,
    /// Blocks moved by this call.
    pub blocks_copied: u64,
    /// Blocks a previous, interrupted call had already moved.
    pub blocks_resumed: u64,
    /// Blocks left alone because they were already equal.
    pub blocks_unchanged: u64,
    /// Bytes read from the source, the blocks found equal included (a
    /// source's zero extents, where it lists them, are not read).
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Bytes of the target read to hash it, where it lists no digests (its
    /// zero extents, where it lists them, are not read).
    pub bytes_hashed: u64,
    /// The verified whole-disk digest, equal on both sides.
    pub disk_digest: String,
    pub elapsed: Duration,
}

/// Why a copy did not finish; none of these may lead to a cutover.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error("{method} {url} failed: {reason}")]
    Http {
        method: &'static str,
        url: String,
        reason: String,
    },
    #[error(
        "the target holds {target} bytes but the source {source_size}; import a volume of exactly {source_size} bytes"
    )]
    SizeMismatch { source_size: u64, target: u64 },
    #[error(
        "verification failed: block {block} (bytes {offset}..{end}) differs between source and target \
         (sha256 {expected} vs {found}); the copy must not be cut over — copy again"
    )]
    Corrupt {
        block: u64,
        offset: u64,
        end: u64,
        expected: String,
        found: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("recording progress failed: {0}")]
    Checkpoint(#[from] std::io::Error),
}

fn http_error(method: &'static str, endpoint: &Endpoint, reason: impl ToString) -> MoveError {
    MoveError::Http {
        method,
        url: endpoint
            .url
            .split('?')
            .next()
            .unwrap_or_default()
            .to_owned(),
        reason: reason.to_string(),
    }
}

/// HTTP clients for the endpoints of one copy: each endpoint's requests
/// go through a client that trusts the public roots and that endpoint's
/// own CA, if it names one (a private platform's), and no other site's.
struct Client {
    public: reqwest::Client,
    private: Vec<(String, reqwest::Client)>,
}

impl Client {
    fn new(endpoints: &[&Endpoint]) -> Result<Self, MoveError> {
        let build = |ca_pem: Option<&str>| {
            let mut builder = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .timeout(Duration::from_secs(300));
            if let Some(pem) = ca_pem {
                let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                    .map_err(|e| MoveError::Invalid(format!("the endpoint's CA: {e}")))?;
                if certs.is_empty() {
                    return Err(MoveError::Invalid(
                        "the endpoint's CA holds no PEM certificate".into(),
                    ));
                }
                for cert in certs {
                    builder = builder.add_root_certificate(cert);
                }
            }
            builder
                .build()
                .map_err(|e| MoveError::Invalid(format!("HTTP client: {e}")))
        };
        let mut private: Vec<(String, reqwest::Client)> = Vec::new();
        for pem in endpoints.iter().filter_map(|e| e.ca_pem.as_deref()) {
            if !private.iter().any(|(p, _)| p == pem) {
                private.push((pem.to_owned(), build(Some(pem))?));
            }
        }
        Ok(Self {
            public: build(None)?,
            private,
        })
    }

    fn request(&self, method: reqwest::Method, endpoint: &Endpoint) -> reqwest::RequestBuilder {
        let http = endpoint
            .ca_pem
            .as_deref()
            .and_then(|pem| self.private.iter().find(|(p, _)| p == pem))
            .map_or(&self.public, |(_, client)| client);
        endpoint
            .headers
            .iter()
            .fold(http.request(method, &endpoint.url), |r, (k, v)| {
                r.header(k, v)
            })
    }

    async fn check(
        method: &'static str,
        endpoint: &Endpoint,
        sent: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<reqwest::Response, MoveError> {
        let response = sent.map_err(|e| http_error(method, endpoint, e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        Err(http_error(
            method,
            endpoint,
            format!("{status}: {}", body.chars().take(200).collect::<String>()),
        ))
    }

    async fn digests(
        &self,
        endpoint: &Endpoint,
        block_size: u64,
    ) -> Result<Vec<String>, MoveError> {
        let sent = self
            .request(reqwest::Method::GET, endpoint)
            .query(&[("digests", block_size)])
            .send()
            .await;
        Self::check("GET", endpoint, sent)
            .await?
            .json()
            .await
            .map_err(|e| http_error("GET", endpoint, format!("digest list unreadable: {e}")))
    }

    /// Every block's digest of `endpoint`: listed by it where it can, else
    /// read block by block (`workers` at once) and hashed here — but for
    /// the blocks `zero` says read as zeros; with the bytes read for it.
    async fn all_digests(
        &self,
        endpoint: &Endpoint,
        block_size: u64,
        workers: usize,
        zero: Option<&[bool]>,
    ) -> Result<(Vec<String>, u64), MoveError> {
        if endpoint.block_digests {
            return Ok((self.digests(endpoint, block_size).await?, 0));
        }
        let blocks = endpoint.size.div_ceil(block_size);
        let is_zero = |b: u64| zero.is_some_and(|z| z.get(b as usize) == Some(&true));
        let hashed: Vec<(String, u64)> = stream::iter(0..blocks)
            .map(|block| async move {
                let (start, end) = span(block, block_size, endpoint.size);
                if is_zero(block) {
                    return Ok::<_, MoveError>((zero_block_digest((end - start) as usize), 0));
                }
                let block = self.read(endpoint, start, end).await?;
                Ok((block.digest().await, end - start))
            })
            .buffered(workers)
            .try_collect()
            .await?;
        let read = hashed.iter().map(|(_, n)| n).sum();
        Ok((hashed.into_iter().map(|(d, _)| d).collect(), read))
    }

    /// Which blocks of an endpoint that lists no digests read as zeros,
    /// where it says so as ovirt-imageio does: `OPTIONS` names the
    /// `extents` feature, and `GET …/extents?context=zero` lists the
    /// image's extents with `zero` set on those that read as zeros. `None`
    /// where the endpoint has no such listing (or it does not add up):
    /// every block is then read.
    async fn zero_blocks(&self, endpoint: &Endpoint, block_size: u64) -> Option<Vec<bool>> {
        if endpoint.block_digests {
            return None;
        }
        let options = self
            .request(reqwest::Method::OPTIONS, endpoint)
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())?
            .json::<serde_json::Value>()
            .await
            .ok()?;
        let features = options["features"].as_array()?;
        if !features.iter().any(|f| f == "extents") {
            return None;
        }
        let (base, query) = match endpoint.url.split_once('?') {
            Some((b, q)) => (b, format!("?{q}&context=zero")),
            None => (endpoint.url.as_str(), "?context=zero".to_owned()),
        };
        let listing = Endpoint {
            url: format!("{}/extents{query}", base.trim_end_matches('/')),
            ..endpoint.clone()
        };
        let extents: Vec<serde_json::Value> = self
            .request(reqwest::Method::GET, &listing)
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())?
            .json()
            .await
            .ok()?;
        // Zero extents in order, covering the image; a block is zero when
        // one extent or a run of them covers it whole.
        let mut zero_ranges: Vec<(u64, u64)> = Vec::new();
        let mut next = 0u64;
        for e in &extents {
            let (start, length) = (e["start"].as_u64()?, e["length"].as_u64()?);
            if start != next {
                return None;
            }
            next = start + length;
            if e["zero"].as_bool()? {
                match zero_ranges.last_mut() {
                    Some((_, end)) if *end == start => *end = next,
                    _ => zero_ranges.push((start, next)),
                }
            }
        }
        if next != endpoint.size {
            return None;
        }
        let blocks = endpoint.size.div_ceil(block_size);
        Some(
            (0..blocks)
                .map(|b| {
                    let (start, end) = span(b, block_size, endpoint.size);
                    zero_ranges.iter().any(|&(s, e)| s <= start && end <= e)
                })
                .collect(),
        )
    }

    /// Bytes `start..end` of `endpoint`, as the parts the response body
    /// arrived in: a block is hashed and written on from them without
    /// ever being joined (one copy of it less through the mover's memory).
    async fn read(&self, endpoint: &Endpoint, start: u64, end: u64) -> Result<Block, MoveError> {
        let sent = self
            .request(reqwest::Method::GET, endpoint)
            .header("range", format!("bytes={start}-{}", end - 1))
            .send()
            .await;
        let response = Self::check("GET", endpoint, sent).await?;
        Block::receive(response.bytes_stream(), end - start)
            .await
            .map_err(|e| http_error("GET", endpoint, format!("bytes {start}..{end}: {e}")))
    }

    async fn write(&self, endpoint: &Endpoint, start: u64, block: Block) -> Result<(), MoveError> {
        let len = block.len();
        let end = start + len;
        let parts = block.into_parts().into_iter().map(Ok::<_, std::io::Error>);
        let sent = self
            .request(reqwest::Method::PUT, endpoint)
            .header(
                "content-range",
                format!("bytes {start}-{}/{}", end - 1, endpoint.size),
            )
            .header("content-length", len)
            .body(reqwest::Body::wrap_stream(stream::iter(parts)))
            .send()
            .await;
        Self::check("PUT", endpoint, sent).await.map(drop)
    }
}

fn span(block: u64, block_size: u64, size: u64) -> (u64, u64) {
    let start = block * block_size;
    (start, (start + block_size).min(size))
}

/// Copy `source` onto `target` and verify it.
pub async fn copy(
    source: &Endpoint,
    target: &Endpoint,
    options: CopyOptions,
    checkpoint: &mut dyn Checkpoint,
) -> Result<CopyReport, MoveError> {
    let started = Instant::now();
    if source.size != target.size {
        return Err(MoveError::SizeMismatch {
            source_size: source.size,
            target: target.size,
        });
    }
    if options.block_size == 0
        || options.block_size > crate::agent::MAX_RANGE
        || options.workers == 0
    {
        return Err(MoveError::Invalid(format!(
            "block size must be 1..={} bytes and workers at least 1",
            crate::agent::MAX_RANGE
        )));
    }
    if !source.ranged || !target.ranged {
        return Err(MoveError::Invalid(
            "both endpoints must accept ranged requests; place a mover agent next to the data"
                .into(),
        ));
    }
    let client = Client::new(&[source, target])?;
    let size = source.size;
    let bs = options.block_size;
    let total = size.div_ceil(bs);
    let resumed = checkpoint.completed();

    // Digests of both sides where the mode compares them: an endpoint that
    // lists its own (a mover agent) answers at once; the target's of one
    // that does not (imageio, say) are read and hashed here, which reads
    // the disk but writes nothing to it. A source's are hashed as each
    // block is read for the copy, so no source block is read twice.
    // A side without digests that lists its zero extents (imageio) has
    // its zero blocks known without reading them.
    let mut hashed = 0u64;
    let (src_zero, dst_zero) = match &options.mode {
        Mode::Digests => tokio::join!(
            client.zero_blocks(source, bs),
            client.zero_blocks(target, bs)
        ),
        _ => (None, None),
    };
    let (src_digests, dst_digests) = match &options.mode {
        Mode::Digests => {
            let (src, (dst, read)) = tokio::try_join!(
                async {
                    match source.block_digests {
                        true => client.digests(source, bs).await.map(Some),
                        false => Ok(None),
                    }
                },
                client.all_digests(target, bs, options.workers, dst_zero.as_deref()),
            )?;
            hashed += read;
            (src, Some(dst))
        }
        _ => (None, None),
    };
    let (mode, wanted): (String, BTreeSet<u64>) = match &options.mode {
        Mode::Full => ("full".into(), (0..total).collect()),
        Mode::Digests => {
            let dst = dst_digests.as_deref().unwrap_or_default();
            let mode = match (source.block_digests, target.block_digests) {
                (true, true) => "delta by block digests",
                (true, false) => "delta by block digests (the target's hashed by the mover)",
                (false, true) => "delta by block digests (the source's hashed as it is read)",
                (false, false) => "delta by block digests (both sides' hashed by the mover)",
            };
            let wanted = match &src_digests {
                Some(src) => (0..total)
                    .filter(|&b| src.get(b as usize) != dst.get(b as usize))
                    .collect(),
                // Decided block by block once the source block is read.
                None => (0..total).collect(),
            };
            (mode.into(), wanted)
        }
        Mode::Changed(ranges) => {
            let mut blocks = BTreeSet::new();
            for &(offset, len) in ranges {
                if len == 0 {
                    continue;
                }
                let last = (offset + len - 1).min(size.saturating_sub(1)) / bs;
                blocks.extend((offset / bs)..=last);
            }
            ("delta by changed ranges".into(), blocks)
        }
    };
    let todo: Vec<u64> = wanted
        .iter()
        .copied()
        .filter(|b| !resumed.contains(b))
        .collect();
    let blocks_resumed = wanted.iter().filter(|b| resumed.contains(b)).count() as u64;

    // Each block read from the source is written unless the target is
    // known to hold it already (its digest, where the source's was not
    // known before reading).
    let skip_equal = src_digests.is_none() && dst_digests.is_some();
    // The digest of a whole zero block, hashed once.
    let zero_digest = zero_block_digest(bs as usize);
    let mut moved = stream::iter(todo.iter().copied())
        .map(|block| {
            let (client, dst) = (&client, dst_digests.as_deref());
            let src_zero = skip_equal
                && src_zero
                    .as_deref()
                    .is_some_and(|z| z.get(block as usize) == Some(&true));
            let zero_digest = &zero_digest;
            async move {
                let (start, end) = span(block, bs, size);
                let len = end - start;
                // A zero extent of the source is not read: its zeros are
                // written only where the target holds something else.
                let (data, digest, read) = if src_zero {
                    let digest = if len == bs {
                        zero_digest.clone()
                    } else {
                        zero_block_digest(len as usize)
                    };
                    (None, Some(digest), 0)
                } else {
                    let data = client.read(source, start, end).await?;
                    // Hashed only where the source's digest was not known.
                    let digest = match skip_equal {
                        true => Some(data.digest().await),
                        false => None,
                    };
                    (Some(data), digest, len)
                };
                let equal =
                    digest.is_some() && dst.and_then(|d| d.get(block as usize)) == digest.as_ref();
                if !equal {
                    let data = data.unwrap_or_else(|| {
                        Block::from(bytes::Bytes::from(vec![0u8; len as usize]))
                    });
                    client.write(target, start, data).await?;
                }
                let written = if equal { 0 } else { len };
                Ok::<_, MoveError>((read, digest, written))
            }
        })
        .buffered(options.workers);
    let (mut bytes_read, mut bytes_written) = (0u64, 0u64);
    let mut written = Vec::new();
    let mut read_digests = Vec::with_capacity(if skip_equal { todo.len() } else { 0 });
    let mut index = 0usize;
    while let Some(result) = moved.next().await {
        let (len, digest, wrote) = result?;
        let block = todo[index];
        bytes_read += len;
        if wrote > 0 {
            bytes_written += wrote;
            written.push(block);
        }
        read_digests.extend(digest);
        // `buffered` yields in order, so this is the block just finished.
        checkpoint.complete(block)?;
        index += 1;
    }
    drop(moved);

    // The source's digest of every block, where known: listed by it, or
    // hashed while reading it (every block, none resumed).
    let known = match (src_digests, skip_equal) {
        (Some(src), _) => Some(src),
        (None, true) if blocks_resumed == 0 => Some(read_digests),
        _ => None,
    };
    let disk = verify(&client, source, target, bs, &written, known.as_deref()).await?;
    let blocks_unchanged = total - blocks_resumed - written.len() as u64;
    Ok(CopyReport {
        mode,
        blocks_total: total,
        blocks_copied: written.len() as u64,
        blocks_resumed,
        blocks_unchanged,
        bytes_read,
        bytes_written,
        bytes_hashed: hashed,
        disk_digest: disk,
        elapsed: started.elapsed(),
    })
}

/// Compare source and target block by block; the whole-disk digest when
/// they are equal. With block digests on both sides every block is
/// compared; otherwise the `copied` blocks are read back from the target
/// and checked against the source's digest — `known` (every block's, from
/// before the copy) where there is one, else the source read again. The
/// whole-disk digest comes from `known` when there is one (the blocks not
/// copied were found equal by it), else from the copied blocks alone.
async fn verify(
    client: &Client,
    source: &Endpoint,
    target: &Endpoint,
    bs: u64,
    copied: &[u64],
    known: Option<&[String]>,
) -> Result<String, MoveError> {
    let corrupt = |block: u64, expected: &str, found: &str| {
        let (offset, end) = span(block, bs, source.size);
        MoveError::Corrupt {
            block,
            offset,
            end,
            expected: expected.to_owned(),
            found: found.to_owned(),
        }
    };
    if source.block_digests && target.block_digests {
        let (src, dst) = tokio::try_join!(client.digests(source, bs), client.digests(target, bs))?;
        if let Some(block) = (0..src.len().max(dst.len())).find(|&i| src.get(i) != dst.get(i)) {
            let missing = String::from("(missing)");
            return Err(corrupt(
                block as u64,
                src.get(block).unwrap_or(&missing),
                dst.get(block).unwrap_or(&missing),
            ));
        }
        return Ok(disk_digest(&src));
    }
    let known = known.filter(|k| k.len() as u64 == source.size.div_ceil(bs));
    let mut digests = Vec::with_capacity(copied.len());
    for &block in copied {
        let (start, end) = span(block, bs, source.size);
        let (a, b) = match known {
            Some(k) => (
                k[block as usize].clone(),
                client.read(target, start, end).await?.digest().await,
            ),
            None => {
                let (a, b) = tokio::try_join!(
                    client.read(source, start, end),
                    client.read(target, start, end)
                )?;
                tokio::join!(a.digest(), b.digest())
            }
        };
        if a != b {
            return Err(corrupt(block, &a, &b));
        }
        digests.push(a);
    }
    Ok(disk_digest(known.unwrap_or(&digests)))
}

/// Read bytes `start..end` of `endpoint` as the mover reads a block (its
/// headers, its CA, the length checked): for checking an endpoint by hand.
pub async fn read_range(
    endpoint: &Endpoint,
    start: u64,
    end: u64,
) -> Result<bytes::Bytes, MoveError> {
    Ok(Client::new(&[endpoint])?
        .read(endpoint, start, end)
        .await?
        .into())
}

/// Write `data` at `start` of `endpoint` as the mover writes a block: for
/// preparing an endpoint by hand (the conformance kit marks a volume).
pub async fn write_range(endpoint: &Endpoint, start: u64, data: Vec<u8>) -> Result<(), MoveError> {
    Client::new(&[endpoint])?
        .write(endpoint, start, bytes::Bytes::from(data).into())
        .await
}

/// Verify a target against its source without copying (before a cutover).
pub async fn verify_endpoints(
    source: &Endpoint,
    target: &Endpoint,
    block_size: u64,
) -> Result<String, MoveError> {
    if !(source.block_digests && target.block_digests) {
        return Err(MoveError::Invalid(
            "verifying a whole disk needs block digests on both endpoints".into(),
        ));
    }
    verify(
        &Client::new(&[source, target])?,
        source,
        target,
        block_size,
        &[],
        None,
    )
    .await
}
