using System;
using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace HyperSd.Migrations.Sqlite.Migrations
{
    /// <inheritdoc />
    public partial class Schedules : Migration
    {
        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.AddColumn<string>(
                name: "overlap",
                table: "schedules",
                type: "TEXT",
                nullable: false,
                defaultValue: "Skip"); // schedules made before the column skip overlapping firings

            migrationBuilder.AddColumn<Guid>(
                name: "schedule_id",
                table: "runs",
                type: "TEXT",
                nullable: true);

            migrationBuilder.AddColumn<long>(
                name: "scheduled_at",
                table: "runs",
                type: "INTEGER",
                nullable: true);

            migrationBuilder.CreateIndex(
                name: "ix_runs_schedule_id_state",
                table: "runs",
                columns: new[] { "schedule_id", "state" });

            migrationBuilder.AddForeignKey(
                name: "fk_runs_schedules_schedule_id",
                table: "runs",
                column: "schedule_id",
                principalTable: "schedules",
                principalColumn: "id",
                onDelete: ReferentialAction.SetNull);
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropForeignKey(
                name: "fk_runs_schedules_schedule_id",
                table: "runs");

            migrationBuilder.DropIndex(
                name: "ix_runs_schedule_id_state",
                table: "runs");

            migrationBuilder.DropColumn(
                name: "overlap",
                table: "schedules");

            migrationBuilder.DropColumn(
                name: "schedule_id",
                table: "runs");

            migrationBuilder.DropColumn(
                name: "scheduled_at",
                table: "runs");
        }
    }
}
