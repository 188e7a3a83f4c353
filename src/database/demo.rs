//! `runnel serve --demo`: a live source of sensor readings and a windowed
//! materialized view over it, so that a newcomer sees data move in psql without any outside
//! service. Created once; a data directory that already has them is left
//! as it is.

use super::Database;
use crate::error::Result;

/// The demo objects, in creation order: (name, statement).
pub const DEMO_OBJECTS: &[(&str, &str)] = &[
    (
        "demo_readings",
        "CREATE SOURCE demo_readings (
            sensor_id INT, temperature DOUBLE, ts TIMESTAMP,
            WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
        ) WITH (
            connector = 'datagen', datagen.rows.per.second = '100',
            fields.sensor_id.kind = 'random', fields.sensor_id.min = '1', fields.sensor_id.max = '50',
            fields.temperature.distribution = 'normal', fields.temperature.mean = '21',
            fields.temperature.stddev = '4',
            fields.ts.kind = 'event_time', fields.ts.max_disorder = '500ms'
        )",
    ),
    (
        "demo_temps_5s",
        "CREATE MATERIALIZED VIEW demo_temps_5s AS
            SELECT window_start, window_end, sensor_id,
                   count(*) AS n, round(avg(temperature), 2) AS avg_t, round(max(temperature), 2) AS max_t
            FROM demo_readings
            GROUP BY TUMBLE(ts, INTERVAL '5' SECOND), sensor_id",
    ),
];

impl Database {
    /// Creates the demo objects that do not exist yet.
    pub async fn install_demo(&self) -> Result<()> {
        let mut session = self.session();
        for (name, sql) in DEMO_OBJECTS {
            if self.catalog().get(name).is_none() {
                session.execute(sql).await?;
            }
        }
        Ok(())
    }
}
