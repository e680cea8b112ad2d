//! HTTP: `POST http://host:port/api/v1/provision`. Plain HTTP only (ThingsBoard's devices use
//! MQTT over TLS for the secure path).

use super::Endpoint;

/// One POST; the answer body of a 200 or 400 (both carry a provisioning response).
pub fn exchange(endpoint: &Endpoint, body: &str) -> Result<String, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(endpoint.timeout))
        .build()
        .into();
    let host = if endpoint.host.contains(':') {
        format!("[{}]", endpoint.host)
    } else {
        endpoint.host.clone()
    };
    let url = format!("http://{host}:{}/api/v1/provision", endpoint.port);
    let mut response = agent
        .post(&url)
        .header("Content-Type", "application/json")
        .send(body)
        .map_err(|e| format!("HTTP {url}: {e}"))?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("HTTP {url}: reading the answer: {e}"))?;
    match status {
        200 | 400 => Ok(text),
        other => Err(format!(
            "HTTP {url} answered {other}, not a provisioning response"
        )),
    }
}
