"""Operations: metrics exposition, status reports, the stats loop, health and HTTP views."""
