//! Shared pieces of the fuzz targets: the fixed plan and a path normaliser.

/// Look-alike groups: the same group name in two namespaces (one without gRPC),
/// dotted names, a member whose name is another group's, a weight-0 member, sticky.
pub const FIXED_CONFIG: &str = r#"{"groups":[
  {"namespace":"tenant-a","name":"ai-model","stickyHeader":"x-user-id",
   "members":[{"name":"ai-model-one","weight":80},{"name":"ai-model-two","weight":20},{"name":"dark","weight":0}]},
  {"namespace":"tenant-b","name":"ai-model","grpc":false,
   "members":[{"name":"b-one","weight":1},{"name":"b-two","weight":1}]},
  {"namespace":"tenant-a","name":"v1.2_x","members":[{"name":"ai-model","weight":3}]},
  {"namespace":"tenant-b","name":"fraud","members":[{"name":"f","weight":1}]}]}"#;

/// What a later hop might do to a path: decode `%XX` (once, as Envoy and Go servers do), turn `\` into `/`,
/// merge slashes and remove dot segments (RFC 3986 5.2.4). The query is kept as is.
pub fn normalise(path: &[u8]) -> Vec<u8> {
    let (path_part, query) = match path.iter().position(|&b| b == b'?') {
        Some(q) => path.split_at(q),
        None => (path, &b""[..]),
    };
    let decoded = percent_decode(path_part);
    let slashed: Vec<u8> = decoded
        .iter()
        .map(|&b| if b == b'\\' { b'/' } else { b })
        .collect();
    let mut out: Vec<&[u8]> = Vec::new();
    for segment in slashed.split(|&b| b == b'/').filter(|s| !s.is_empty()) {
        match segment {
            b"." => {}
            b".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut result = Vec::with_capacity(path.len());
    for s in out {
        result.push(b'/');
        result.extend_from_slice(s);
    }
    if slashed.ends_with(b"/") || result.is_empty() {
        result.push(b'/');
    }
    result.extend_from_slice(query);
    result
}

fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if input[i] == b'%' && i + 2 < input.len() {
            if let (Some(h), Some(l)) = (hex(input[i + 1]), hex(input[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}
